import Foundation
import Storage

/// The Kubernetes API server stand-in (`tests/kube/apiserver.py`: kmock 0.8 plus the API
/// conventions it lacks) on a free loopback port, with its kubeconfig, its state file (so a
/// restart keeps every object, as etcd does behind a restarted kube-apiserver) and its fault
/// endpoints. Stopped when released.
public final class KubeAPIServer: @unchecked Sendable {
    public let dir: TempDir
    public let port: Int
    public let token: String?
    public let tls: Bool
    public let namespace: String
    public var kubeconfig: String { dir.file("kubeconfig") }
    public var url: String { "\(tls ? "https" : "http")://127.0.0.1:\(port)" }
    private var child: ChildProcess?

    /// The Python that has kmock: `$CHEBACKUP_VENV` (install-deps.sh makes it), else python3.
    public static var python: String {
        let venv = ProcessInfo.processInfo.environment["CHEBACKUP_VENV"] ?? "/opt/chebackup-venv"
        return FileManager.default.isExecutableFile(atPath: venv + "/bin/python") ? venv + "/bin/python" : (which("python3") ?? "/usr/bin/python3")
    }

    public static var script: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("tests/kube/apiserver.py").path
    }

    /// kubectl sends a token only over TLS, hence TLS whenever there is a token.
    public init(token: String? = "test-token-" + String(UInt64.random(in: 0...UInt64.max), radix: 16), tls: Bool = true,
                namespace: String = "eclipse-che") throws {
        dir = TempDir("chebackup-kube")
        port = freeLoopbackPort()
        self.token = token
        self.tls = tls
        self.namespace = namespace
        try start()
    }

    public func start() throws {
        var args = [Self.script, "--port", String(port), "--state", dir.file("state.json"), "--kubeconfig", kubeconfig,
                    "--namespace", namespace, "--bookmark-interval", "1"]
        if let token { args += ["--token", token] }
        if tls { args += ["--tls-dir", dir.file("tls")] }
        child = try ChildProcess(Self.python, args, log: dir.file("apiserver-\(UInt32.random(in: 0...UInt32.max)).log"))
        guard waitForPort(port, seconds: 20) else { throw ConformanceFailure("the API server stand-in did not start: \(log)") }
    }

    /// Kills it (SIGKILL: no goodbye to open watches), as a crashed API server.
    public func stop() {
        child?.kill()
        child = nil
    }

    public func restart() throws {
        stop()
        try start()
    }

    public var log: String {
        let logs = ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).filter { $0.hasSuffix(".log") }.sorted()
        return logs.compactMap { try? String(contentsOfFile: dir.file($0), encoding: .utf8) }.joined(separator: "\n")
    }

    /// POST to a fault endpoint (`break-watches`, `compact`, `conflict?plural=P&count=N`, `fail?count=N&code=C`).
    public func fault(_ what: String) throws {
        let r = try run(which("curl") ?? "/usr/bin/curl", ["-sS", "-k", "-X", "POST", "-o", "/dev/null", "-w", "%{http_code}", "\(url)/_fault/\(what)"])
        guard r.stdout.hasPrefix("2") else { throw ConformanceFailure("fault \(what): \(r.stdout) \(r.stderr)") }
    }

    /// The requests the server received: method, path (with query) and content type.
    public func requests() throws -> [[String: Any]] {
        let r = try run(which("curl") ?? "/usr/bin/curl", ["-sS", "-k", "\(url)/_requests"])
        return (try JSONSerialization.jsonObject(with: r.stdoutData) as? [[String: Any]]) ?? []
    }

    /// The real kubectl against it.
    public func kubectl(_ args: [String], stdin: Data? = nil) throws -> CommandResult {
        try run(which("kubectl") ?? "/usr/bin/kubectl", ["--kubeconfig", kubeconfig] + args, stdin: stdin)
    }

    /// `kubectl apply --validate=false -f -` of YAML text.
    @discardableResult
    public func apply(_ yaml: String) throws -> CommandResult {
        let r = try kubectl(["apply", "--validate=false", "-f", "-"], stdin: Data(yaml.utf8))
        guard r.status == 0 else { throw ConformanceFailure("kubectl apply failed: \(r.stderr)\n\(yaml)") }
        return r
    }

    /// A JSON object from `kubectl get … -o json`, nil when not found.
    public func get(_ args: [String]) throws -> [String: Any]? {
        let r = try kubectl(["get"] + args + ["-o", "json"])
        guard r.status == 0 else { return nil }
        return try JSONSerialization.jsonObject(with: r.stdoutData) as? [String: Any]
    }

    deinit {
        stop()
        dir.remove()
    }
}
