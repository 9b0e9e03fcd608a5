import Foundation
import Testing
import TestSupport

/// tests/protocol/agent_client.py is a second implementation of protocol.md, in Python, written
/// without looking at the agent's code. Its conformance run covers the v2 handshake and its
/// binding to the hello line, refusals, authenticated lines and every kind of tampering
/// (changed, replayed, skipped, reflected, plain, oversize), malformed and random lines inside
/// envelopes, rewrite values, pre-authentication limits, busy, cancel and disconnect handling.
@Suite struct IndependentClientTests {
    @Test(.enabled(if: which("python3") != nil))
    func pythonClientConformance() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        // Enough data that a backup runs for a moment (busy, cancel and disconnect checks).
        try FileManager.default.createDirectory(atPath: dir.file("big"), withIntermediateDirectories: true)
        var gen = SeededBytes(seed: 77)
        for i in 0..<12 { try gen.data(16 << 20).write(to: URL(fileURLWithPath: dir.file("big/f\(i)"))) }
        let password = "long-repository-password-for-python"
        let initialized = try await runAsync(builtProduct("chebackup"), ["repo", "init", "-r", "local:" + dir.file("repo")],
                                  environment: ["BACKUP_REPOSITORY_PASSWORD": password])
        #expect(initialized.status == 0, "\(initialized.stderr)")
        let agent = try await AgentProcess(role: "files", arguments: ["--dir", "big=\(dir.file("big"))", "--handshake-timeout", "3"])
        guard case .tcp(let host, let port) = agent.endpoint else { return }
        let result = try await runAsync(which("python3")!, [repoRoot + "/tests/protocol/agent_client.py", "--address", "\(host):\(port)",
                                                 "--token-file", agent.dir.file("token"), "conformance",
                                                 "--files-repo", "local:" + dir.file("repo"), "--repo-password", password,
                                                 "--handshake-timeout-expected", "3"])
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        let summary = result.stdout.split(separator: "\n").last.map(String.init) ?? ""
        #expect(summary.hasSuffix(" passed, 0 failed"), "\(result.stdout)")
        #expect((Int(summary.split(separator: " ").first ?? "") ?? 0) >= 30, "\(summary)")
        #expect(!agent.log.contains(password))
    }
}
