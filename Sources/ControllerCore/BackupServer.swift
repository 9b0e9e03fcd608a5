import Foundation
import LineProtocol
import Storage

/// A backup server as the engine uses it: a repository URL (never with a password in it) and
/// the secrets that open it.
public struct BackupServer: Codable, Sendable {
    public var url: String
    public var secrets: RepositorySecrets
    public var isInternal: Bool
    /// The configuration's default for backing up workspace claims.
    public var includeWorkspaces: Bool?

    public init(url: String, secrets: RepositorySecrets, isInternal: Bool, includeWorkspaces: Bool? = nil) {
        self.url = url
        self.secrets = secrets
        self.isInternal = isInternal
        self.includeWorkspaces = includeWorkspaces
    }

    /// The one way to describe the server of a CheBackupServerConfiguration: its URL from the
    /// spec, its secrets from the Secrets the spec names, with Che's keys (`repo-password`,
    /// `username`/`password`, `awsAccessKeyId`/`awsSecretAccessKey`, `ssh-privatekey`).
    public init(configuration config: CheBackupServerConfiguration, secrets store: any SecretStore,
                isInternal: Bool = false, environment: [String: String] = ProcessInfo.processInfo.environment) async throws {
        try config.validate()
        func secret(_ name: String, _ key: String, _ what: String) async throws -> String {
            guard let secret = try await store.secret(name) else {
                throw ControllerError(.notFound, "secret \(name) (\(what)) not found")
            }
            guard let value = secret.value(key) else {
                throw ControllerError(.notFound, "secret \(name) has no key \"\(key)\" (\(what))")
            }
            return value
        }
        func trimmed(_ path: String) -> String { path.trimmingCharacters(in: CharacterSet(charactersIn: "/")) }
        if let rest = config.spec.rest {
            let scheme = rest.protocol ?? "https"
            var secrets = RepositorySecrets(repositoryPassword: try await secret(rest.repositoryPasswordSecretRef, "repo-password", "repository password"))
            if let credentials = rest.credentialsSecretRef {
                secrets.restUsername = try await secret(credentials, "username", "REST credentials")
                secrets.restPassword = try await secret(credentials, "password", "REST credentials")
            }
            self.init(url: "rest:\(scheme)://\(rest.hostname):\(rest.port ?? (scheme == "https" ? 443 : 80))/\(trimmed(rest.repositoryPath))",
                      secrets: secrets, isInternal: isInternal)
        } else if let s3 = config.spec.awss3 {
            let scheme = s3.protocol ?? "https"
            var secrets = RepositorySecrets(repositoryPassword: try await secret(s3.repositoryPasswordSecretRef, "repo-password", "repository password"))
            secrets.awsAccessKeyId = try await secret(s3.awsAccessKeySecretRef, "awsAccessKeyId", "AWS keys")
            secrets.awsSecretAccessKey = try await secret(s3.awsAccessKeySecretRef, "awsSecretAccessKey", "AWS keys")
            secrets.awsRegion = s3.region ?? environment["AWS_DEFAULT_REGION"]
            self.init(url: "s3:\(scheme)://\(s3.hostname ?? "s3.amazonaws.com"):\(s3.port ?? (scheme == "https" ? 443 : 80))/\(trimmed(s3.repositoryPath))",
                      secrets: secrets, isInternal: isInternal)
        } else {
            let sftp = config.spec.sftp!
            var secrets = RepositorySecrets(repositoryPassword: try await secret(sftp.repositoryPasswordSecretRef, "repo-password", "repository password"))
            secrets.sshKey = try await secret(sftp.sshKeySecretRef, "ssh-privatekey", "SSH key")
            let path = sftp.repositoryPath.hasPrefix("/") ? "/" + sftp.repositoryPath : sftp.repositoryPath
            self.init(url: "sftp:\(sftp.username)@\(sftp.hostname):\(sftp.port ?? 22)/\(path)", secrets: secrets, isInternal: isInternal)
        }
        includeWorkspaces = config.spec.includeWorkspaces
    }

    /// The reverse: the configuration and Secrets (named `secretPrefix-…`) that describe this
    /// server, as chectl writes them for `server:backup -r URL -p PW`. `local:` URLs have no
    /// configuration form.
    public func configuration(name: String, namespace: String?, secretPrefix: String,
                              labels: [String: String]? = nil) throws -> (CheBackupServerConfiguration, [Secret]) {
        let parsed: RepositoryURL
        do { parsed = try RepositoryURL.parse(url) } catch let e as RepositoryURL.ParseError {
            throw ControllerError(.invalidResource, "invalid repository URL: \(e.description)")
        }
        func meta(_ n: String) -> ObjectMeta { ObjectMeta(name: n, namespace: namespace, labels: labels) }
        let passwordSecret = Secret(metadata: meta(secretPrefix + "repo-password"), stringData: ["repo-password": secrets.repositoryPassword])
        var out = [passwordSecret]
        var spec = CheBackupServerConfiguration.Spec()
        switch parsed {
        case .rest(let location):
            var rest = RestServerSpec(protocol: location.scheme, hostname: location.host, port: location.port,
                                      repositoryPath: location.path.trimmingCharacters(in: CharacterSet(charactersIn: "/")),
                                      repositoryPasswordSecretRef: passwordSecret.metadata.name)
            if let user = secrets.restUsername, let password = secrets.restPassword {
                let credentials = Secret(metadata: meta(secretPrefix + "rest-credentials"), stringData: ["username": user, "password": password])
                rest.credentialsSecretRef = credentials.metadata.name
                out.append(credentials)
            }
            spec.rest = rest
        case .s3(let location):
            let keys = Secret(metadata: meta(secretPrefix + "aws-credentials"),
                              stringData: ["awsAccessKeyId": secrets.awsAccessKeyId ?? "", "awsSecretAccessKey": secrets.awsSecretAccessKey ?? ""])
            out.append(keys)
            spec.awss3 = AwsS3ServerSpec(protocol: location.scheme, hostname: location.host, port: location.port,
                                         repositoryPath: location.bucket + (location.prefix.isEmpty ? "" : "/" + location.prefix),
                                         repositoryPasswordSecretRef: passwordSecret.metadata.name, awsAccessKeySecretRef: keys.metadata.name,
                                         region: secrets.awsRegion)
        case .sftp(let location):
            let key = Secret(metadata: meta(secretPrefix + "ssh-key"), stringData: ["ssh-privatekey": secrets.sshKey ?? ""])
            out.append(key)
            spec.sftp = SftpServerSpec(username: location.user ?? "root", hostname: location.host, port: location.port,
                                       repositoryPath: location.path, repositoryPasswordSecretRef: passwordSecret.metadata.name,
                                       sshKeySecretRef: key.metadata.name)
        case .local:
            throw ControllerError(.invalidResource, "a local: repository cannot be described by a CheBackupServerConfiguration: use rest:, s3: or sftp:")
        }
        return (CheBackupServerConfiguration(metadata: meta(name), spec: spec), out)
    }

    /// The URL opened, with its credentials.
    public func storageURL() throws -> RepositoryURL {
        do { return try RepositoryURL.parse(url) } catch let e as RepositoryURL.ParseError {
            throw ControllerError(.invalidResource, "invalid repository URL: \(e.description)")
        }
    }
}
