import AgentClient
import Foundation
import LineProtocol
import Repository
import Storage
import Testing
import TestSupport

/// A man in the middle between the controller and an agent (protocol v2): the real controller
/// client and the real agent talk through `tests/protocol/tamper_proxy.py`, which changes,
/// drops, replays or swaps one line after `welcome`. Every kind of message, in each direction,
/// is tried; each attempt must end the connection with a `tampered` (or, for a withheld line, a
/// time-out) error, and nothing the change asked for may happen.
@Suite(.serialized, .enabled(if: which("python3") != nil)) struct TamperTests {
    let proxyScript = repoRoot + "/tests/protocol/tamper_proxy.py"

    /// One proxied connection: the proxy's process and the address to connect to.
    struct Proxy {
        let process: ChildProcess
        let endpoint: AgentEndpoint
        let log: String
    }

    /// `line`: the N-th line after `welcome` in `direction`; `type`: instead, the first line whose
    /// message has this type.
    func proxy(_ agent: AgentProcess, _ dir: TempDir, direction: String, line: Int = 0, type: String? = nil, action: String,
               field: String? = nil, value: String? = nil) async throws -> Proxy {
        guard case .tcp(let host, let port) = agent.endpoint else { throw ConformanceFailure("not a TCP agent") }
        let listen = freeLoopbackPort()
        let log = dir.file("proxy-\(UUID().uuidString).log")
        var arguments = [proxyScript, "--listen", "127.0.0.1:\(listen)", "--upstream", "\(host):\(port)",
                         "--direction", direction, "--line", "\(line)", "--action", action]
        if let field, let value { arguments += ["--field", field, "--json-value", value] }
        if let type { arguments += ["--type", type] }
        let process = try ChildProcess(which("python3")!, ["-u"] + arguments, log: log)
        // The proxy serves one connection: wait for its word instead of probing the port.
        var listening = false
        for _ in 0..<1200 where !listening {
            listening = ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("listening on")
            if !listening { try await Task.sleep(for: .milliseconds(50)) }
        }
        guard listening else { throw ConformanceFailure("the tamper proxy did not start: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")") }
        return Proxy(process: process, endpoint: .tcp(host: "127.0.0.1", port: listen), log: log)
    }

    /// Runs `body` through the proxy and returns the error it ended with.
    func refused<T: Sendable>(_ proxy: Proxy, idleTimeout: Duration = .seconds(120),
                              _ body: @escaping @Sendable (AgentSession) async throws -> T) async -> AgentError? {
        do {
            _ = try await AgentClient.withSession(proxy.endpoint, token: token, idleTimeout: idleTimeout, body)
            return nil
        } catch let error as AgentError {
            return error
        } catch {
            return AgentError(code: "other", message: "\(error)")
        }
    }

    struct Setup {
        let dir: TempDir
        let agent: AgentProcess
        let url: String
        let old: SnapshotID
        let latest: SnapshotID
        var file: String { dir.file("che-data/state.txt") }
    }

    /// A files agent with two snapshots (old, latest) of a directory now in a third state.
    func setUp() async throws -> Setup {
        let dir = TempDir()
        try FileManager.default.createDirectory(atPath: dir.file("che-data"), withIntermediateDirectories: true)
        let (url, repo) = try await makeLocalRepository(dir)
        let agent = try await AgentProcess(role: "files", arguments: ["--dir", "che-data=\(dir.file("che-data"))"])
        var ids: [SnapshotID] = []
        for state in ["old", "latest"] {
            try Data("state \(state)".utf8).write(to: URL(fileURLWithPath: dir.file("che-data/state.txt")))
            let parts = try await AgentClient.withSession(agent.endpoint, token: token) { try await $0.backup(url: url, secrets: secrets) }
            ids.append(try await repo.commitSnapshot(parts: parts).0)
        }
        try Data("state now".utf8).write(to: URL(fileURLWithPath: dir.file("che-data/state.txt")))
        return Setup(dir: dir, agent: agent, url: url, old: ids[0], latest: ids[1])
    }

    func content(_ path: String) -> String {
        (try? String(contentsOfFile: path, encoding: .utf8)) ?? "<missing>"
    }

    @Test func changedRequestsAreRefusedAndDoNothing() async throws {
        let s = try await setUp()
        defer { s.dir.remove() }
        let url = s.url
        let latest = s.latest

        // Roll a restore back to the old snapshot.
        var p = try await proxy(s.agent, s.dir, direction: "c2a", line: 0, action: "modify", field: "snapshot", value: "\"\(s.old.hex)\"")
        var error = await refused(p) { try await $0.restore(url: url, secrets: secrets, snapshot: latest) }
        #expect(error?.code == "tampered", "\(String(describing: error))")
        #expect(error?.message.contains("line 0 from the controller failed its integrity check") == true, "\(String(describing: error))")
        #expect(content(s.file) == "state now", "nothing was restored")

        // Point a backup at the attacker's repository.
        let attacker = s.dir.file("attacker-repo")
        p = try await proxy(s.agent, s.dir, direction: "c2a", line: 0, action: "modify", field: "repository",
                      value: "{\"url\":\"local:\(attacker)\",\"secrets\":{\"box\":\"AAAA\"}}")
        error = await refused(p) { try await $0.backup(url: url, secrets: secrets) }
        #expect(error?.code == "tampered", "\(String(describing: error))")
        #expect(!FileManager.default.fileExists(atPath: attacker))

        // Ask for other parts, answer another request id, cancel another request.
        for (field, value) in [("parts", "[\"files/other\"]"), ("id", "\"forged\"")] {
            p = try await proxy(s.agent, s.dir, direction: "c2a", line: 0, action: "modify", field: field, value: value)
            error = await refused(p) { try await $0.backup(url: url, secrets: secrets) }
            #expect(error?.code == "tampered", "\(field): \(String(describing: error))")
        }
        for field in ["id", "type"] {
            p = try await proxy(s.agent, s.dir, direction: "c2a", line: 0, action: "modify", field: field, value: "\"status\"")
            error = await refused(p) { try await $0.ping() }
            #expect(error?.code == "tampered", "\(field): \(String(describing: error))")
        }
        #expect(s.agent.log.contains("tampered"))
        // The agent is unharmed and serves an honest controller.
        try await AgentClient.withSession(s.agent.endpoint, token: token) { try await $0.ping() }
    }

    @Test func changedAnswersAreRefused() async throws {
        let s = try await setUp()
        defer { s.dir.remove() }
        let url = s.url
        // A result (ping's "pong"), an event of a backup, and an error (an unknown snapshot).
        var p = try await proxy(s.agent, s.dir, direction: "a2c", line: 0, action: "modify", field: "state", value: "\"idle\"")
        var error = await refused(p) { try await $0.ping() }
        #expect(error?.code == "tampered", "\(String(describing: error))")
        #expect(error?.message.contains("line 0 from the agent failed its integrity check") == true, "\(String(describing: error))")

        p = try await proxy(s.agent, s.dir, direction: "a2c", line: 0, action: "modify", field: "stage", value: "\"forged\"")
        let events = Locked<[String]>([])
        error = await refused(p) { try await $0.backup(url: url, secrets: secrets) { e in events.withLock { $0.append(e.stage) } } }
        #expect(error?.code == "tampered", "\(String(describing: error))")
        #expect(!events.value.contains("forged"))

        p = try await proxy(s.agent, s.dir, direction: "a2c", line: 0, action: "modify", field: "message", value: "\"all fine\"")
        error = await refused(p) { try await $0.restore(url: url, secrets: secrets, snapshot: SnapshotID(hex: String(repeating: "0", count: 64))!) }
        #expect(error?.code == "tampered", "\(String(describing: error))")

        // A backup's result whose parts were swapped for others: the controller never sees them.
        p = try await proxy(s.agent, s.dir, direction: "a2c", type: "result", action: "modify", field: "parts", value: "[]")
        error = await refused(p) { try await $0.backup(url: url, secrets: secrets) }
        #expect(error?.code == "tampered", "\(String(describing: error))")
    }

    /// An answer longer than the controller's limit (64 MiB) ends the session with a line that
    /// names the limit: it is neither skipped (the request would wait forever) nor buffered whole.
    @Test func anAnswerOverTheLimitEndsTheSessionNamingIt() async throws {
        let s = try await setUp()
        defer { s.dir.remove() }
        let p = try await proxy(s.agent, s.dir, direction: "a2c", line: 0, action: "flood")
        let error = await refused(p) { try await $0.ping() }
        #expect(error?.code == "tampered", "\(String(describing: error))")
        #expect(error?.message.contains("longer than the limit of \(AgentClient.maxLineLength)") == true, "\(String(describing: error))")
        #expect(!(error?.message.contains("xxxx") ?? true), "the line itself is not quoted")
    }

    @Test func droppedReplayedAndSwappedLinesAreRefused() async throws {
        let s = try await setUp()
        defer { s.dir.remove() }
        // Controller → agent: the first of two pings dropped, replayed, or swapped with the second.
        for action in ["drop", "replay", "swap"] {
            let p = try await proxy(s.agent, s.dir, direction: "c2a", line: 0, action: action)
            let error = await refused(p) { session in
                async let first: Void = session.ping()
                async let second: Void = session.ping()
                _ = try await (first, second)
                try await session.ping()
            }
            #expect(error?.code == "tampered", "\(action): \(String(describing: error))")
        }
        // Agent → controller: an answer replayed.
        var p = try await proxy(s.agent, s.dir, direction: "a2c", line: 0, action: "replay")
        var error = await refused(p) { session in
            try await session.ping()
            try await session.ping()
        }
        #expect(error?.code == "tampered", "\(String(describing: error))")
        // An answer withheld: the controller gives up instead of waiting forever.
        p = try await proxy(s.agent, s.dir, direction: "a2c", line: 0, action: "drop")
        error = await refused(p, idleTimeout: .seconds(3)) { try await $0.ping() }
        #expect(error?.code == "timeout", "\(String(describing: error))")
        #expect(error?.message.contains("sent nothing for") == true)
        // A restore request withheld: nothing restored, and the controller does not hang either.
        let url = s.url
        let old = s.old
        p = try await proxy(s.agent, s.dir, direction: "c2a", line: 0, action: "drop")
        error = await refused(p, idleTimeout: .seconds(3)) { try await $0.restore(url: url, secrets: secrets, snapshot: old) }
        #expect(error?.code == "timeout", "\(String(describing: error))")
        #expect(content(s.file) == "state now")
    }
}
