import ControllerCore
import Foundation
import HummingbirdBcrypt
import Repository
import Storage
import Subprocess

/// The internal backup server in local mode: `chebackup rest-server` started for the command's
/// duration on the configured address, storing in the state directory. Its configuration and
/// Secrets (a random repository password; REST credentials, random too) are made on first use,
/// as files of mode 0600; the server runs with an htpasswd file made from those credentials, so
/// no other local process can read or delete the backups without them.
struct InternalServerProcessHost: InternalServerHost {
    let installation: Installation
    let store: FileResourceStore

    static let restUser = "chebackup"
    var credentialsName: String { Engine.internalConfigurationName + "-rest-credentials" }
    var htpasswdPath: String { installation.stateDir + "/backup-server.htpasswd" }

    func ensureConfiguration() async throws -> String {
        let name = Engine.internalConfigurationName
        let meta = { (n: String) in ObjectMeta(name: n, namespace: installation.namespace, creationTimestamp: Engine.now()) }
        if !store.exists(.secret, name) {
            try store.write(Secret(metadata: meta(name), stringData: ["repo-password": Primitives.random(32).base64EncodedString()]))
        }
        if !store.exists(.secret, credentialsName) {
            try store.write(Secret(metadata: meta(credentialsName),
                                   stringData: ["username": Self.restUser, "password": Primitives.random(24).base64EncodedString()]))
        }
        // Made here, or by an older version without credentials: (re)written with them.
        if let existing = try await store.get(CheBackupServerConfiguration.self, name), existing.spec.rest?.credentialsSecretRef != nil {
            return name
        }
        let address = try HostPort(installation.internalServer.listen, what: "internalServer.listen")
        let rest = RestServerSpec(protocol: "http", hostname: address.connectableHost, port: address.port, repositoryPath: "che",
                                  repositoryPasswordSecretRef: name, credentialsSecretRef: credentialsName)
        try store.write(CheBackupServerConfiguration(metadata: meta(name), spec: .init(rest: rest)))
        return name
    }

    /// The htpasswd file the server checks, from the credentials Secret (bcrypt, mode 0600).
    func writeHtpasswd() async throws {
        _ = try await ensureConfiguration()
        guard let secret = try await store.secret(credentialsName), let user = secret.value("username"),
              let password = secret.value("password") else {
            throw ControllerError(.notFound, "secret \(credentialsName) (the internal server's REST credentials) is incomplete")
        }
        let temp = htpasswdPath + ".\(getpid()).tmp"
        guard FileManager.default.createFile(atPath: temp, contents: Data("\(user):\(Bcrypt.hash(password, cost: 10))\n".utf8),
                                             attributes: [.posixPermissions: 0o600]), rename(temp, htpasswdPath) == 0 else {
            throw ControllerError(.store, "cannot write \(htpasswdPath)")
        }
    }

    func withRunning<T: Sendable>(stage: @escaping @Sendable (String) -> Void, _ body: () async throws -> T) async throws -> T {
        stage("Setting up the internal backup server on \(installation.internalServer.listen)")
        let process = try await start()
        defer {
            process.abort()
            _ = process.waitBlocking()
        }
        return try await body()
    }

    func start() async throws -> Subprocess {
        let address = try HostPort(installation.internalServer.listen, what: "internalServer.listen")
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        try FileManager.default.createDirectory(atPath: installation.internalServerPath, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        try await writeHtpasswd()
        let process = try Subprocess(exe, ["rest-server", "--path", installation.internalServerPath, "--listen", address.description,
                                           "--htpasswd", htpasswdPath],
                                     outputFile: installation.stateDir + "/backup-server.log")
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if address.accepts() { return process }
            if !process.isRunning { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        process.abort()
        throw ControllerError(.store, "the internal backup server did not start on \(address); see \(installation.stateDir)/backup-server.log")
    }
}
