import Foundation
import KubernetesAPI
import Storage
import TestSupport

/// The Kubernetes API stand-in (`tests/kube/apiserver.py`, kmock-based) as a child process on a
/// loopback port: started, waited for, stopped and restarted (same port, same state file), with
/// its fault hooks. Written to move into TestSupport unchanged but for `import KubernetesAPI`.
final class KubeAPIServer: @unchecked Sendable {
    static let repoRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }  // Tests/KubernetesAPITests/this.swift
        return url.path
    }()

    static var script: String { repoRoot + "/tests/kube/apiserver.py" }

    /// `$CHEBACKUP_VENV/bin/python` (default /opt/chebackup-venv), else `python3` from the PATH.
    static var python: String? {
        let venv = ProcessInfo.processInfo.environment["CHEBACKUP_VENV"] ?? "/opt/chebackup-venv"
        if FileManager.default.isExecutableFile(atPath: venv + "/bin/python") { return venv + "/bin/python" }
        return which("python3")
    }

    static var available: Bool { FileManager.default.fileExists(atPath: script) && python != nil }

    struct Failure: Error, CustomStringConvertible { let description: String }

    let port: Int
    let token: String?
    let namespace: String
    let dir: TempDir
    let tlsDir: String?
    let statePath: String?
    let extraArguments: [String]
    var kubeconfigPath: String { dir.file("kubeconfig") }
    var url: String { "\(tlsDir == nil ? "http" : "https")://127.0.0.1:\(port)" }
    private var child: ChildProcess?
    private var starts = 0
    private let pool = BlockingPool(threads: 1, name: "kube-fixture")

    init(token: String? = "fixture-token", tls: Bool = true, state: Bool = false, namespace: String = "eclipse-che",
         arguments: [String] = []) throws {
        guard Self.available else { throw Failure(description: "the API stand-in \(Self.script) or python3 is missing") }
        port = freeLoopbackPort()
        self.token = token
        self.namespace = namespace
        dir = TempDir("kube-apiserver")
        tlsDir = tls ? dir.file("tls") : nil
        statePath = state ? dir.file("state.json") : nil
        extraArguments = arguments
        try start()
    }

    deinit {
        child?.kill()
        pool.shutdown()
        dir.remove()
    }

    /// Starts the server (again) and waits until it says it listens.
    func start() throws {
        precondition(child == nil, "already running")
        starts += 1
        let log = dir.file("apiserver-\(starts).log")
        var args = [Self.script, "--port", "\(port)", "--namespace", namespace, "--kubeconfig", kubeconfigPath]
        if let token { args += ["--token", token] }
        if let tlsDir { args += ["--tls-dir", tlsDir] }
        if let statePath { args += ["--state", statePath] }
        let process = try ChildProcess(Self.python!, args + extraArguments, log: log)
        child = process
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if text.contains("apiserver: listening on") { return }
            if !process.process.isRunning {
                child = nil
                throw Failure(description: "the API stand-in exited: \(text.suffix(2000))")
            }
            usleep(50_000)
        }
        throw Failure(description: "the API stand-in did not start within 60 s (log \(log))")
    }

    /// Stops the server: SIGKILL is a crash (the state file has every write), SIGTERM a clean stop.
    func stop(signal: Int32 = SIGKILL) {
        child?.kill(signal: signal)
        child = nil
    }

    func restart() throws {
        stop()
        try start()
    }

    /// The configuration a client of this server uses (its kubeconfig), optionally with another token.
    func config(token: String? = nil) throws -> KubeConfig {
        var config = try KubeConfig.load(path: kubeconfigPath, context: nil, environment: [:])
        if let token { config.token = .fixed(token) }
        return config
    }

    var caPEM: Data? {
        guard let tlsDir else { return nil }
        return FileManager.default.contents(atPath: tlsDir + "/ca.crt")
    }

    /// POSTs a test hook (`/_fault/compact`, `/_fault/conflict?plural=P&count=N`, …); its answer.
    @discardableResult
    func hook(_ pathAndQuery: String) async throws -> JSON {
        try await send("POST", pathAndQuery)
    }

    /// Every API request the server answered, oldest first (method, path, contentType, code, body).
    func requests() async throws -> [JSON] {
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
}
