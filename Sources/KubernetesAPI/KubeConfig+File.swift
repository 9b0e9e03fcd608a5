import Foundation
import Yams

extension KubeConfig {
    /// A kubeconfig: `path` (kubectl's `--kubeconfig`), else the first existing file of
    /// `$KUBECONFIG` (a ':'-separated list), else `~/.kube/config`. The context is `context`, else
    /// the file's `current-context`. Relative file paths in it resolve against its directory.
    /// TLS verification is skipped only when the cluster entry says `insecure-skip-tls-verify: true`.
    public static func load(path: String?, context: String?,
                            environment: [String: String] = ProcessInfo.processInfo.environment) throws -> KubeConfig {
        let file = try kubeconfigPath(explicit: path, environment: environment)
        let text = String(decoding: try readFile(file, what: "kubeconfig"), as: UTF8.self)
        let document: KubeconfigFile
        do {
            document = try YAMLDecoder().decode(KubeconfigFile.self, from: text)
        } catch {
            throw KubeError(.config, "kubeconfig \(file): not a valid kubeconfig: \(JSON.describe(error))")
        }
        return try document.resolve(context: context, file: file)
    }

    static func kubeconfigPath(explicit: String?, environment: [String: String]) throws -> String {
        if let explicit, !explicit.isEmpty {
            guard FileManager.default.fileExists(atPath: explicit) else {
                throw KubeError(.config, "kubeconfig \(explicit) does not exist")
            }
            return explicit
        }
        if let list = environment["KUBECONFIG"], !list.isEmpty {
            let paths = list.split(separator: ":").map(String.init).filter { !$0.isEmpty }
            guard let first = paths.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
                throw KubeError(.config, "none of the kubeconfig files in KUBECONFIG exists (\(paths.joined(separator: ", ")))")
            }
            return first
        }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        let file = home + "/.kube/config"
        guard FileManager.default.fileExists(atPath: file) else {
            throw KubeError(.config, "no kubeconfig: \(file) does not exist (give --kubeconfig or set KUBECONFIG)")
        }
        return file
    }
}

/// The parts of a kubeconfig (`kind: Config`) this client uses.
struct KubeconfigFile: Decodable {
    struct Named<T: Decodable>: Decodable {
        var name: String
        var value: T?

        enum CodingKeys: String, CodingKey { case name, cluster, user, context }

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = try c.decode(String.self, forKey: .name)
            value = try c.decodeIfPresent(T.self, forKey: .cluster) ?? c.decodeIfPresent(T.self, forKey: .user)
                ?? c.decodeIfPresent(T.self, forKey: .context)
        }
    }

    struct Cluster: Decodable {
        var server: String?
        var certificateAuthority: String?
        var certificateAuthorityData: String?
        var insecureSkipTLSVerify: Bool?

        enum CodingKeys: String, CodingKey {
            case server
            case certificateAuthority = "certificate-authority"
            case certificateAuthorityData = "certificate-authority-data"
            case insecureSkipTLSVerify = "insecure-skip-tls-verify"
        }
    }

    struct User: Decodable {
        var token: String?
        var tokenFile: String?
        var clientCertificate: String?
        var clientCertificateData: String?
        var clientKey: String?
        var clientKeyData: String?
        var username: String?
        var exec: JSON?
        var authProvider: JSON?

        enum CodingKeys: String, CodingKey {
            case token, tokenFile, username, exec
            case clientCertificate = "client-certificate"
            case clientCertificateData = "client-certificate-data"
            case clientKey = "client-key"
            case clientKeyData = "client-key-data"
            case authProvider = "auth-provider"
        }
    }

    struct Context: Decodable {
        var cluster: String?
        var user: String?
        var namespace: String?
    }

    var currentContext: String?
    var clusters: [Named<Cluster>]?
    var users: [Named<User>]?
    var contexts: [Named<Context>]?

    enum CodingKeys: String, CodingKey {
        case clusters, users, contexts
        case currentContext = "current-context"
    }

    func resolve(context requested: String?, file: String) throws -> KubeConfig {
        func fail(_ text: String) -> KubeError { KubeError(.config, "kubeconfig \(file): \(text)") }
        let contexts = self.contexts ?? []
        let contextName: String
        if let requested, !requested.isEmpty {
            contextName = requested
        } else if let current = currentContext, !current.isEmpty {
            contextName = current
        } else {
            throw fail("no current-context is set and no context was given")
        }
        guard let entry = contexts.first(where: { $0.name == contextName }) else {
            let known = contexts.map(\.name).joined(separator: ", ")
            throw fail("context \"\(contextName)\" not found (contexts: \(known.isEmpty ? "none" : known))")
        }
        guard let context = entry.value, let clusterName = context.cluster, !clusterName.isEmpty else {
            throw fail("context \"\(contextName)\" names no cluster")
        }
        guard let cluster = (clusters ?? []).first(where: { $0.name == clusterName })?.value else {
            throw fail("cluster \"\(clusterName)\" (of context \"\(contextName)\") not found")
        }
        guard let server = cluster.server, !server.isEmpty else { throw fail("cluster \"\(clusterName)\" has no server") }
        guard server.hasPrefix("https://") || server.hasPrefix("http://") else {
            throw fail("cluster \"\(clusterName)\": server \(server) is not an http(s) URL")
        }
        let dir = (file as NSString).deletingLastPathComponent
        var config = KubeConfig(server: server.hasSuffix("/") ? String(server.dropLast()) : server,
                                namespace: context.namespace.flatMap { $0.isEmpty ? nil : $0 } ?? "default",
                                contextName: contextName)
        config.insecureSkipTLSVerify = cluster.insecureSkipTLSVerify ?? false
        config.caPEM = try pem(data: cluster.certificateAuthorityData, file: cluster.certificateAuthority, dir: dir,
                               what: "cluster \"\(clusterName)\" certificate-authority", kubeconfig: file)
        if let userName = context.user, !userName.isEmpty {
            guard let user = (users ?? []).first(where: { $0.name == userName })?.value else {
                throw fail("user \"\(userName)\" (of context \"\(contextName)\") not found")
            }
            try apply(user, named: userName, to: &config, dir: dir, file: file)
        }
        return config
    }

    private func apply(_ user: User, named name: String, to config: inout KubeConfig, dir: String, file: String) throws {
        func fail(_ text: String) -> KubeError { KubeError(.config, "kubeconfig \(file): user \"\(name)\" \(text)") }
        if let token = user.token, !token.isEmpty {
            config.token = .fixed(token)
        } else if let tokenFile = user.tokenFile, !tokenFile.isEmpty {
            let path = Self.resolve(tokenFile, against: dir)
            guard FileManager.default.fileExists(atPath: path) else { throw fail("has a tokenFile that does not exist: \(path)") }
            config.token = .file(path)
        }
        config.clientCertPEM = try pem(data: user.clientCertificateData, file: user.clientCertificate, dir: dir,
                                       what: "user \"\(name)\" client-certificate", kubeconfig: file)
        config.clientKeyPEM = try pem(data: user.clientKeyData, file: user.clientKey, dir: dir,
                                      what: "user \"\(name)\" client-key", kubeconfig: file)
        if (config.clientCertPEM == nil) != (config.clientKeyPEM == nil) {
            throw fail(config.clientCertPEM == nil ? "has a client-key but no client-certificate"
                                                   : "has a client-certificate but no client-key")
        }
        if config.token == nil && config.clientCertPEM == nil {
            if user.exec != nil { throw fail("uses an exec credential plugin, which is not supported (use a token or a client certificate)") }
            if user.authProvider != nil { throw fail("uses an auth-provider, which is not supported (use a token or a client certificate)") }
            if user.username != nil { throw fail("uses a username and password, which is not supported (use a token or a client certificate)") }
        }
    }

    /// PEM from base64 `data`, else from `file` (relative to the kubeconfig's directory).
    private func pem(data: String?, file: String?, dir: String, what: String, kubeconfig: String) throws -> Data? {
        if let data, !data.isEmpty {
            guard let decoded = Data(base64Encoded: data.filter { !$0.isWhitespace }) else {
                throw KubeError(.config, "kubeconfig \(kubeconfig): \(what)-data is not valid base64")
            }
            return decoded
        }
        guard let file, !file.isEmpty else { return nil }
        return try KubeConfig.readFile(Self.resolve(file, against: dir), what: "kubeconfig \(kubeconfig): \(what)")
    }

    static func resolve(_ path: String, against dir: String) -> String {
        if path.hasPrefix("/") { return path }
        if path.hasPrefix("~/") { return NSHomeDirectory() + path.dropFirst() }
        return dir.isEmpty ? path : dir + "/" + path
    }
}
