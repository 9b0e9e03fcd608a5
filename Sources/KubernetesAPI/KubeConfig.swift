import Foundation

/// Where the API server is and how to authenticate to it: from a pod's service account
/// (`inCluster`), from a kubeconfig file (`load`), or whichever applies (`automatic`).
public struct KubeConfig: Sendable {
    /// `https://host:port` (a path prefix is kept: some proxies serve the API under one).
    public var server: String
    /// The CAs that sign the server's certificate (PEM); nil: the system's.
    public var caPEM: Data?
    /// Do not verify the server's certificate. Only ever true when a kubeconfig says so.
    public var insecureSkipTLSVerify = false
    /// The bearer token, if the user authenticates with one.
    public var token: TokenSource?
    /// A TLS client certificate and key (PEM), if the user authenticates with one.
    public var clientCertPEM: Data?
    public var clientKeyPEM: Data?
    /// The namespace requests go to when they name none.
    public var namespace: String
    /// The kubeconfig context this came from; nil in a cluster.
    public var contextName: String?

    public init(server: String, namespace: String = "default", token: TokenSource? = nil, caPEM: Data? = nil,
                insecureSkipTLSVerify: Bool = false, clientCertPEM: Data? = nil, clientKeyPEM: Data? = nil,
                contextName: String? = nil) {
        self.server = server
        self.namespace = namespace
        self.token = token
        self.caPEM = caPEM
        self.insecureSkipTLSVerify = insecureSkipTLSVerify
        self.clientCertPEM = clientCertPEM
        self.clientKeyPEM = clientKeyPEM
        self.contextName = contextName
    }

    /// Where a bearer token comes from. A token file is read again whenever it changes
    /// (service-account tokens are rotated while the pod runs). Printing one never shows the token.
    public enum TokenSource: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
        case fixed(String)
        case file(String)

        public var description: String {
            switch self {
            case .fixed: return "a token"
            case .file(let path): return "the token in \(path)"
            }
        }

        public var debugDescription: String { description }
        public var customMirror: Mirror { Mirror(self, children: ["source": description]) }
    }

    public static let serviceAccountRoot = "/var/run/secrets/kubernetes.io/serviceaccount"

    /// The pod's service account: `KUBERNETES_SERVICE_HOST`/`_PORT`, and `token`, `ca.crt` and
    /// `namespace` under `root`.
    public static func inCluster(environment: [String: String] = ProcessInfo.processInfo.environment,
                                 root: String = serviceAccountRoot) throws -> KubeConfig {
        guard let host = environment["KUBERNETES_SERVICE_HOST"], !host.isEmpty else {
            throw KubeError(.config, "not running in a cluster: KUBERNETES_SERVICE_HOST is not set")
        }
        let port = environment["KUBERNETES_SERVICE_PORT"].flatMap { $0.isEmpty ? nil : $0 } ?? "443"
        guard let portNumber = Int(port), (1...65535).contains(portNumber) else {
            throw KubeError(.config, "KUBERNETES_SERVICE_PORT is not a port number: \(port)")
        }
        let tokenPath = root + "/token"
        guard FileManager.default.fileExists(atPath: tokenPath) else {
            throw KubeError(.config, "in-cluster configuration: no service account token at \(tokenPath)")
        }
        let ca = try readFile(root + "/ca.crt", what: "in-cluster configuration: the cluster CA")
        var namespace = "default"
        let namespacePath = root + "/namespace"
        if FileManager.default.fileExists(atPath: namespacePath) {
            let text = String(decoding: try readFile(namespacePath, what: "in-cluster configuration: the namespace"), as: UTF8.self)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            if !text.isEmpty { namespace = text }
        }
        let hostPart = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        return KubeConfig(server: "https://\(hostPart):\(portNumber)", namespace: namespace, token: .file(tokenPath), caPEM: ca)
    }

    /// True in a pod with a service account (the API server's address set, its token present).
    public static var runningInCluster: Bool {
        runsInCluster(environment: ProcessInfo.processInfo.environment, root: serviceAccountRoot)
    }

    static func runsInCluster(environment: [String: String], root: String) -> Bool {
        guard let host = environment["KUBERNETES_SERVICE_HOST"], !host.isEmpty else { return false }
        return FileManager.default.fileExists(atPath: root + "/token")
    }

    /// In a cluster when running in one and no kubeconfig was asked for (no `kubeconfig`, no
    /// `context`, no `$KUBECONFIG`); else from the kubeconfig (see `load`).
    public static func automatic(kubeconfig: String?, context: String?,
                                 environment: [String: String] = ProcessInfo.processInfo.environment,
                                 serviceAccountRoot root: String = serviceAccountRoot) throws -> KubeConfig {
        let asked = kubeconfig != nil || context != nil || !(environment["KUBECONFIG"] ?? "").isEmpty
        if !asked && runsInCluster(environment: environment, root: root) {
            return try inCluster(environment: environment, root: root)
        }
        return try load(path: kubeconfig, context: context, environment: environment)
    }

    static func readFile(_ path: String, what: String) throws -> Data {
        guard FileManager.default.fileExists(atPath: path) else { throw KubeError(.config, "\(what): \(path) does not exist") }
        do {
            return try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw KubeError(.config, "\(what): cannot read \(path): \(error.localizedDescription)")
        }
    }
}
