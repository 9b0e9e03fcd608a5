import Foundation
import KubernetesAPI
import Storage

/// The Kubernetes API stand-in (`tests/kube/apiserver.py`: kmock 0.8 plus the API conventions it
/// lacks) as a child process on a loopback port: started, waited for, stopped and restarted (same
/// port, same state file, as etcd behind a restarted kube-apiserver), with its fault hooks and
/// the real kubectl pointed at it. kubectl sends a token only over TLS, hence TLS by default.
public final class KubeAPIServer: @unchecked Sendable {
    public static let repoRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }  // Tests/KubernetesAPITests/this.swift
        return url.path
    }()

    public static var script: String { repoRoot + "/tests/kube/apiserver.py" }

    /// `$CHEBACKUP_VENV/bin/python` (default /opt/chebackup-venv), else `python3` from the PATH.
    public static var python: String? {
        let venv = ProcessInfo.processInfo.environment["CHEBACKUP_VENV"] ?? "/opt/chebackup-venv"
        if FileManager.default.isExecutableFile(atPath: venv + "/bin/python") { return venv + "/bin/python" }
        return which("python3")
    }

    public static var available: Bool { FileManager.default.fileExists(atPath: script) && python != nil }

    public struct Failure: Error, CustomStringConvertible { public let description: String }

    public let port: Int
    public let token: String?
    public let namespace: String
    public let dir: TempDir
    public let tlsDir: String?
    public let statePath: String?
    public let extraArguments: [String]
    public var kubeconfigPath: String { dir.file("kubeconfig") }
    public var url: String { "\(tlsDir == nil ? "http" : "https")://127.0.0.1:\(port)" }
    private var child: ChildProcess?
    private var starts = 0
    private let pool = BlockingPool(threads: 1, name: "kube-fixture")

    public init(token: String? = "fixture-token", tls: Bool = true, state: Bool = false, namespace: String = "eclipse-che",
         arguments: [String] = []) async throws {
        guard Self.available else { throw Failure(description: "the API stand-in \(Self.script) or python3 is missing") }
        port = freeLoopbackPort()
        self.token = token
        self.namespace = namespace
        dir = TempDir("kube-apiserver")
        tlsDir = tls ? dir.file("tls") : nil
        statePath = state ? dir.file("state.json") : nil
        extraArguments = arguments
        try await start()
    }

    deinit {
        child?.kill()
        pool.shutdown()
        dir.remove()
    }

    /// Starts the server (again) and waits until it says it listens, suspended (never blocking
    /// one of the few threads every test's tasks share).
    public func start() async throws {
        precondition(child == nil, "already running")
        starts += 1
        let log = dir.file("apiserver-\(starts).log")
        var args = [Self.script, "--port", "\(port)", "--namespace", namespace, "--kubeconfig", kubeconfigPath]
        if let token { args += ["--token", token] }
        if let tlsDir { args += ["--tls-dir", tlsDir] }
        if let statePath { args += ["--state", statePath] }
        let process = try ChildProcess(Self.python!, args + extraArguments, log: log)
        child = process
        if await process.waitForLine(containing: "apiserver: listening on") != nil { return }
        guard process.process.isRunning else {
            child = nil
            throw Failure(description: "the API stand-in exited: \(process.log.suffix(2000))")
        }
        throw Failure(description: "the API stand-in did not start within 60 s (log \(log))")
    }

    /// Stops the server: SIGKILL is a crash (the state file has every write), SIGTERM a clean stop.
    public func stop(signal: Int32 = SIGKILL) {
        child?.kill(signal: signal)
        child = nil
    }

    public func restart() async throws {
        stop()
        try await start()
    }

    /// The configuration a client of this server uses (its kubeconfig), optionally with another token.
    public func config(token: String? = nil) throws -> KubeConfig {
        var config = try KubeConfig.load(path: kubeconfigPath, context: nil, environment: [:])
        if let token { config.token = .fixed(token) }
        return config
    }

    public var caPEM: Data? {
        guard let tlsDir else { return nil }
        return FileManager.default.contents(atPath: tlsDir + "/ca.crt")
    }

    /// POSTs a test hook (`/_fault/compact`, `/_fault/conflict?plural=P&count=N`, …); its answer.
    @discardableResult
    public func hook(_ pathAndQuery: String) async throws -> JSON {
        try await send("POST", pathAndQuery)
    }

    /// Every API request the server answered, oldest first (method, path, contentType, code, body).
    public func requests() async throws -> [JSON] {
        try await send("GET", "/_requests").array ?? []
    }

    private func send(_ method: String, _ pathAndQuery: String) async throws -> JSON {
        var settings = CurlSettings()
        settings.caPEM = caPEM
        let transport = CurlTransport(pool: pool, settings: settings, redactedLocation: url)
        var request = CurlRequest(method: method, url: url + pathAndQuery)
        if method == "POST" { request.body = Data() }
        let response = try await transport.perform(request)
        guard response.status == 200 else {
            throw Failure(description: "\(method) \(pathAndQuery): HTTP \(response.status) \(String(decoding: response.body, as: UTF8.self))")
        }
        return try JSON(data: response.body)
    }

    /// The server's log, every start of it.
    public var log: String {
        (1...max(starts, 1)).compactMap { try? String(contentsOfFile: dir.file("apiserver-\($0).log"), encoding: .utf8) }.joined(separator: "\n")
    }

    /// The real kubectl against it, with a discovery cache of its own, on a thread of its own.
    public func kubectl(_ args: [String], stdin: Data? = nil) async throws -> CommandResult {
        try await runAsync(which("kubectl") ?? "/usr/bin/kubectl", ["--kubeconfig", kubeconfigPath] + args,
                environment: ["KUBECACHEDIR": dir.file("kube-cache")], stdin: stdin)
    }

    /// `kubectl apply --validate=false -f -` of YAML text.
    @discardableResult
    public func apply(_ yaml: String) async throws -> CommandResult {
        let r = try await kubectl(["apply", "--validate=false", "-f", "-"], stdin: Data(yaml.utf8))
        guard r.status == 0 else { throw Failure(description: "kubectl apply failed: \(r.stderr)\n\(yaml)") }
        return r
    }

    /// A JSON object from `kubectl get … -o json`, nil when not found.
    public func get(_ args: [String]) async throws -> [String: Any]? {
        let r = try await kubectl(["get"] + args + ["-o", "json"])
        guard r.status == 0 else { return nil }
        return try JSONSerialization.jsonObject(with: r.stdoutData) as? [String: Any]
    }
}
