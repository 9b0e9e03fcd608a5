import Foundation
@testable import KubernetesAPI
import Testing
import TestSupport

/// Kubeconfig files and service-account directories written into a temp dir.
@Suite struct KubeConfigTests {
    let caPEM = "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n"
    let certPEM = "-----BEGIN CERTIFICATE-----\nCLIENT\n-----END CERTIFICATE-----\n"
    let keyPEM = "-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n"

    func b64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

    /// A kubeconfig with two contexts: `dev` (token, CA data) and `prod` (`userYAML`, `clusterYAML`).
    func write(_ dir: TempDir, name: String = "config", current: String? = "dev", userYAML: String = "token: prod-token",
               clusterYAML: String = "certificate-authority: ca.crt", server: String = "https://10.0.0.1:443",
               prodUser: String = "prod-user") throws -> String {
        var text = """
            apiVersion: v1
            kind: Config
            clusters:
            - name: dev-cluster
              cluster:
                server: https://dev.example:6443/
                certificate-authority-data: \(b64(caPEM))
            - name: prod-cluster
              cluster:
                server: \(server)
                \(clusterYAML)
            users:
            - name: dev-user
              user:
                token: dev-token
            - name: prod-user
              user:
                \(userYAML)
            contexts:
            - name: dev
              context: {cluster: dev-cluster, user: dev-user, namespace: dev-ns}
            - name: prod
              context: {cluster: prod-cluster, user: \(prodUser)}

            """
        if let current { text += "current-context: \(current)\n" }
        let path = dir.file(name)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func currentContextWithTokenAndCAData() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let config = try KubeConfig.load(path: try write(dir), context: nil, environment: [:])
        #expect(config.server == "https://dev.example:6443")
        #expect(config.token == .fixed("dev-token"))
        #expect(config.caPEM == Data(caPEM.utf8))
        #expect(config.namespace == "dev-ns")
        #expect(config.contextName == "dev")
        #expect(config.insecureSkipTLSVerify == false)
        #expect(config.clientCertPEM == nil)
    }

    @Test func givenContextWithRelativeFilesAndDefaultNamespace() throws {
        let dir = TempDir()
        defer { dir.remove() }
        try caPEM.write(toFile: dir.file("ca.crt"), atomically: true, encoding: .utf8)
        let config = try KubeConfig.load(path: try write(dir), context: "prod", environment: [:])
        #expect(config.server == "https://10.0.0.1:443")
        #expect(config.caPEM == Data(caPEM.utf8))
        #expect(config.token == .fixed("prod-token"))
        #expect(config.namespace == "default")
        #expect(config.contextName == "prod")
    }

    @Test func tokenFileRelativeToTheKubeconfig() throws {
        let dir = TempDir()
        defer { dir.remove() }
        try FileManager.default.createDirectory(atPath: dir.file("sub"), withIntermediateDirectories: true)
        try "tok\n".write(toFile: dir.file("sub/token"), atomically: true, encoding: .utf8)
        try caPEM.write(toFile: dir.file("sub/ca.crt"), atomically: true, encoding: .utf8)
        let path = try write(dir, name: "sub/config", userYAML: "tokenFile: token")
        let config = try KubeConfig.load(path: path, context: "prod", environment: [:])
        guard case .file(let tokenPath) = config.token else { Issue.record("no token file"); return }
        #expect((tokenPath as NSString).standardizingPath == (dir.file("sub/token") as NSString).standardizingPath)
        #expect(try TokenCache(config.token).current() == "tok")
    }

    @Test func clientCertificateFromDataAndFromFiles() throws {
        let dir = TempDir()
        defer { dir.remove() }
        try caPEM.write(toFile: dir.file("ca.crt"), atomically: true, encoding: .utf8)
        let data = try write(dir, userYAML: "client-certificate-data: \(b64(certPEM))\n    client-key-data: \(b64(keyPEM))")
        let fromData = try KubeConfig.load(path: data, context: "prod", environment: [:])
        #expect(fromData.clientCertPEM == Data(certPEM.utf8))
        #expect(fromData.clientKeyPEM == Data(keyPEM.utf8))
        #expect(fromData.token == nil)

        try certPEM.write(toFile: dir.file("client.crt"), atomically: true, encoding: .utf8)
        try keyPEM.write(toFile: dir.file("client.key"), atomically: true, encoding: .utf8)
        let files = try write(dir, name: "files", userYAML: "client-certificate: client.crt\n    client-key: \(dir.file("client.key"))")
        let fromFiles = try KubeConfig.load(path: files, context: "prod", environment: [:])
        #expect(fromFiles.clientCertPEM == Data(certPEM.utf8))
        #expect(fromFiles.clientKeyPEM == Data(keyPEM.utf8))
    }

    @Test func insecureOnlyWhenStated() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let insecure = try write(dir, clusterYAML: "insecure-skip-tls-verify: true")
        #expect(try KubeConfig.load(path: insecure, context: "prod", environment: [:]).insecureSkipTLSVerify)
        let stated = try write(dir, name: "false", clusterYAML: "insecure-skip-tls-verify: false")
        #expect(try !KubeConfig.load(path: stated, context: "prod", environment: [:]).insecureSkipTLSVerify)
        #expect(try !KubeConfig.load(path: try write(dir, name: "dev"), context: nil, environment: [:]).insecureSkipTLSVerify)
    }

    @Test func kubeconfigFromTheEnvironment() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let path = try write(dir)
        let fromList = try KubeConfig.load(path: nil, context: nil, environment: ["KUBECONFIG": "\(dir.file("absent")):\(path)"])
        #expect(fromList.contextName == "dev")
        try FileManager.default.createDirectory(atPath: dir.file("home/.kube"), withIntermediateDirectories: true)
        _ = try write(dir, name: "home/.kube/config", current: "prod", clusterYAML: "insecure-skip-tls-verify: true")
        let fromHome = try KubeConfig.load(path: nil, context: nil, environment: ["HOME": dir.file("home")])
        #expect(fromHome.contextName == "prod")
        // An explicit path wins over KUBECONFIG.
        let explicit = try KubeConfig.load(path: path, context: nil, environment: ["KUBECONFIG": dir.file("home/.kube/config")])
        #expect(explicit.contextName == "dev")
    }

    /// Each bad kubeconfig fails with one line naming the file and what is wrong.
    @Test(arguments: [
        ("missing", "does not exist"),
        ("unknown-context", #"context "nope" not found (contexts: dev, prod)"#),
        ("no-current", "no current-context is set and no context was given"),
        ("bad-yaml", "not a valid kubeconfig"),
        ("no-user", #"user "ghost" (of context "prod") not found"#),
        ("cert-no-key", #"user "prod-user" has a client-certificate but no client-key"#),
        ("exec", "exec credential plugin, which is not supported"),
        ("bad-base64", "certificate-authority-data is not valid base64"),
        ("ca-file-missing", "does not exist"),
        ("token-file-missing", "has a tokenFile that does not exist"),
        ("not-http", "is not an http(s) URL"),
    ])
    func badKubeconfigs(_ kind: String, _ expected: String) throws {
        let dir = TempDir()
        defer { dir.remove() }
        try caPEM.write(toFile: dir.file("ca.crt"), atomically: true, encoding: .utf8)
        var path = dir.file("config")
        var context: String? = "prod"
        switch kind {
        case "missing": path = dir.file("nothing-here")
        case "unknown-context": path = try write(dir); context = "nope"
        case "no-current": path = try write(dir, current: nil); context = nil
        case "bad-yaml": try "clusters: [ {name: ".write(toFile: path, atomically: true, encoding: .utf8)
        case "no-user": path = try write(dir, prodUser: "ghost")
        case "cert-no-key": path = try write(dir, userYAML: "client-certificate-data: \(b64(certPEM))")
        case "exec": path = try write(dir, userYAML: "exec: {command: aws, apiVersion: client.authentication.k8s.io/v1}")
        case "bad-base64": path = try write(dir, clusterYAML: "certificate-authority-data: '%%%not base64'")
        case "ca-file-missing": path = try write(dir, clusterYAML: "certificate-authority: nowhere/ca.crt")
        case "token-file-missing": path = try write(dir, userYAML: "tokenFile: /nonexistent/token")
        case "not-http": path = try write(dir, server: "ftp://x")
        default: Issue.record("unknown case \(kind)")
        }
        let error = #expect(throws: KubeError.self) { try KubeConfig.load(path: path, context: context, environment: [:]) }
        #expect(error?.code == .config)
        #expect(error?.message.contains(expected) == true, "\(error?.message ?? "")")
        #expect(error?.message.contains(path) == true, "names the file: \(error?.message ?? "")")
        #expect(error?.message.contains("\n") == false)
        #expect(error?.message.contains("prod-token") == false)
    }

    @Test func noKubeconfigAnywhere() {
        let dir = TempDir()
        defer { dir.remove() }
        let home = #expect(throws: KubeError.self) { try KubeConfig.load(path: nil, context: nil, environment: ["HOME": dir.path]) }
        #expect(home?.message == "no kubeconfig: \(dir.path)/.kube/config does not exist (give --kubeconfig or set KUBECONFIG)")
        let list = #expect(throws: KubeError.self) {
            try KubeConfig.load(path: nil, context: nil, environment: ["KUBECONFIG": "/nonexistent/a:/nonexistent/b"])
        }
        #expect(list?.message.contains("/nonexistent/a, /nonexistent/b") == true)
    }

    @Test func printingAConfigNeverShowsTheToken() throws {
        let config = KubeConfig(server: "https://x", token: .fixed("very-secret-token"))
        #expect(!"\(config)".contains("very-secret-token"))
        #expect(!String(reflecting: config).contains("very-secret-token"))
        var dumped = ""
        dump(config, to: &dumped)
        #expect(!dumped.contains("very-secret-token"))
    }
}

@Suite struct InClusterConfigTests {
    func serviceAccount(token: Bool = true, ca: Bool = true, namespace: String? = "che") throws -> TempDir {
        let dir = TempDir()
        if token { try "sa-token\n".write(toFile: dir.file("token"), atomically: true, encoding: .utf8) }
        if ca { try "CA".write(toFile: dir.file("ca.crt"), atomically: true, encoding: .utf8) }
        if let namespace { try namespace.write(toFile: dir.file("namespace"), atomically: true, encoding: .utf8) }
        return dir
    }

    let env = ["KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"]

    @Test func fromTheServiceAccountFiles() throws {
        let root = try serviceAccount()
        defer { root.remove() }
        let config = try KubeConfig.inCluster(environment: env, root: root.path)
        #expect(config.server == "https://10.96.0.1:443")
        #expect(config.token == .file(root.file("token")))
        #expect(config.caPEM == Data("CA".utf8))
        #expect(config.namespace == "che")
        #expect(config.contextName == nil)
        #expect(!config.insecureSkipTLSVerify)
        let v6 = try KubeConfig.inCluster(environment: ["KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"],
                                          root: root.path)
        #expect(v6.server == "https://[fd00::1]:6443")
        let noNamespace = try serviceAccount(namespace: nil)
        defer { noNamespace.remove() }
        #expect(try KubeConfig.inCluster(environment: env, root: noNamespace.path).namespace == "default")
    }

    @Test func missingPieces() throws {
        let root = try serviceAccount()
        defer { root.remove() }
        let noHost = #expect(throws: KubeError.self) { try KubeConfig.inCluster(environment: [:], root: root.path) }
        #expect(noHost?.message.contains("KUBERNETES_SERVICE_HOST") == true)
        var badPort = env
        badPort["KUBERNETES_SERVICE_PORT"] = "https"
        let port = #expect(throws: KubeError.self) { try KubeConfig.inCluster(environment: badPort, root: root.path) }
        #expect(port?.message.contains("https") == true)
        let noToken = try serviceAccount(token: false)
        defer { noToken.remove() }
        let token = #expect(throws: KubeError.self) { try KubeConfig.inCluster(environment: env, root: noToken.path) }
        #expect(token?.message.contains(noToken.file("token")) == true)
        let noCA = try serviceAccount(ca: false)
        defer { noCA.remove() }
        let ca = #expect(throws: KubeError.self) { try KubeConfig.inCluster(environment: env, root: noCA.path) }
        #expect(ca?.message.contains(noCA.file("ca.crt")) == true)
        #expect(ca?.code == .config)
    }

    @Test func automaticPrefersTheClusterUnlessAKubeconfigIsAskedFor() throws {
        let root = try serviceAccount()
        defer { root.remove() }
        let dir = TempDir()
        defer { dir.remove() }
        let kubeconfig = try KubeConfigTests().write(dir)
        #expect(try KubeConfig.automatic(kubeconfig: nil, context: nil, environment: env, serviceAccountRoot: root.path).contextName == nil)
        #expect(try KubeConfig.automatic(kubeconfig: kubeconfig, context: nil, environment: env, serviceAccountRoot: root.path)
            .contextName == "dev")
        var withEnv = env
        withEnv["KUBECONFIG"] = kubeconfig
        #expect(try KubeConfig.automatic(kubeconfig: nil, context: nil, environment: withEnv, serviceAccountRoot: root.path)
            .contextName == "dev")
        // Not in a cluster (no token file): ~/.kube/config.
        let empty = TempDir()
        defer { empty.remove() }
        try FileManager.default.createDirectory(atPath: dir.file(".kube"), withIntermediateDirectories: true)
        _ = try KubeConfigTests().write(dir, name: ".kube/config", current: "prod")
        try "CA".write(toFile: dir.file(".kube/ca.crt"), atomically: true, encoding: .utf8)
        #expect(try KubeConfig.automatic(kubeconfig: nil, context: nil, environment: env.merging(["HOME": dir.path]) { $1 },
                                         serviceAccountRoot: empty.path).contextName == "prod")
        #expect(!KubeConfig.runsInCluster(environment: env, root: empty.path))
        #expect(KubeConfig.runsInCluster(environment: env, root: root.path))
        #expect(!KubeConfig.runsInCluster(environment: [:], root: root.path))
    }

    @Test func aRotatedTokenFileIsReadAgain() throws {
        let root = try serviceAccount()
        defer { root.remove() }
        let cache = TokenCache(.file(root.file("token")))
        #expect(try cache.current() == "sa-token")
        // kubelet swaps the file: a new inode (and here a new size).
        try "rotated-token".write(toFile: root.file("token.new"), atomically: true, encoding: .utf8)
        #expect(rename(root.file("token.new"), root.file("token")) == 0)
        #expect(try cache.current() == "rotated-token")
        try "".write(toFile: root.file("token"), atomically: true, encoding: .utf8)
        let empty = #expect(throws: KubeError.self) { try cache.current() }
        #expect(empty?.message.contains("is empty") == true)
        try FileManager.default.removeItem(atPath: root.file("token"))
        let gone = #expect(throws: KubeError.self) { try cache.current() }
        #expect(gone?.code == .config)
        #expect(gone?.message.contains(root.file("token")) == true)
    }
}
