import Foundation
import HummingbirdBcrypt
import Testing
import TestSupport

/// `chebackup rest-server` as a separate process, used by the unmodified restic client and by
/// our own client, with basic authentication.
@Suite struct RestServerCommandTests {
    let bin = builtProduct("chebackup")

    func startServer(_ dir: TempDir, extra: [String] = []) async throws -> (ChildProcess, Int) {
        try "che:\(Bcrypt.hash("rest-pw-123", cost: 4))\n".write(toFile: dir.file("htpasswd"), atomically: true, encoding: .utf8)
        let port = freeLoopbackPort()
        let server = try ChildProcess(bin, ["rest-server", "--path", dir.file("served"), "--listen", "127.0.0.1:\(port)",
                                            "--htpasswd", dir.file("htpasswd")] + extra, log: dir.file("server.log"))
        #expect(await waitForPortAsync(port), "rest-server did not start")
        return (server, port)
    }

    @Test(.enabled(if: which("restic") != nil))
    func unmodifiedResticWorksAgainstOurServer() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (server, port) = try await startServer(dir)
        defer { server.kill() }
        var gen = SeededBytes(seed: 41)
        try FileManager.default.createDirectory(atPath: dir.file("src/sub"), withIntermediateDirectories: true)
        try gen.data(3_000_000).write(to: URL(fileURLWithPath: dir.file("src/random")))
        try gen.text(2_000_000).write(to: URL(fileURLWithPath: dir.file("src/sub/text")))
        let env = ["RESTIC_PASSWORD": "restic-repo-pw", "RESTIC_REPOSITORY": "rest:http://che:rest-pw-123@127.0.0.1:\(port)/restic",
                   "RESTIC_CACHE_DIR": dir.file("cache")]
        func restic(_ args: [String]) async throws -> CommandResult {
            let r = try await runAsync(which("restic")!, args, environment: env)
            #expect(r.status == 0, "restic \(args.joined(separator: " ")) failed: \(r.stderr)")
            return r
        }
        _ = try await restic(["init"])
        _ = try await restic(["backup", "-q", dir.file("src")])
        try gen.text(100_000).write(to: URL(fileURLWithPath: dir.file("src/sub/new")))
        _ = try await restic(["backup", "-q", dir.file("src")])
        let snapshots = try await restic(["snapshots", "--json"])
        let list = try #require(try JSONSerialization.jsonObject(with: snapshots.stdoutData) as? [[String: Any]])
        #expect(list.count == 2)
        let check = try await restic(["check", "--read-data"])
        #expect(check.stdout.contains("no errors were found"))
        _ = try await restic(["restore", "latest", "--target", dir.file("out")])
        for file in ["random", "sub/text", "sub/new"] {
            #expect(try Data(contentsOf: URL(fileURLWithPath: dir.file("src/" + file))) ==
                    Data(contentsOf: URL(fileURLWithPath: dir.file("out") + dir.file("src/" + file))))
        }
        _ = try await restic(["forget", "--keep-last", "1", "--prune"])
        let after = try await restic(["snapshots", "--json"])
        #expect((try JSONSerialization.jsonObject(with: after.stdoutData) as? [[String: Any]])?.count == 1)
        _ = try await restic(["check"])
        // A wrong server password is refused.
        let denied = try await runAsync(which("restic")!, ["snapshots"], environment: env.merging(
            ["RESTIC_REPOSITORY": "rest:http://che:wrong@127.0.0.1:\(port)/restic"]) { _, new in new })
        #expect(denied.status != 0)
    }

    @Test func ourClientWithCredentialsFromTheEnvironment() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (server, port) = try await startServer(dir, extra: ["--append-only"])
        defer { server.kill() }
        var gen = SeededBytes(seed: 42)
        try FileManager.default.createDirectory(atPath: dir.file("src"), withIntermediateDirectories: true)
        try gen.data(2_000_000).write(to: URL(fileURLWithPath: dir.file("src/a")))
        let repo = "rest:http://127.0.0.1:\(port)/che"
        let env = ["BACKUP_REPOSITORY_PASSWORD": "repo-pw-456", "REST_SERVER_USERNAME": "che", "REST_SERVER_PASSWORD": "rest-pw-123"]
        let initialized = try await runAsync(bin, ["repo", "init", "-r", repo], environment: env)
        #expect(initialized.status == 0, "\(initialized.stderr)")
        let backup = try await runAsync(bin, ["repo", "backup", "-r", repo, dir.file("src")], environment: env)
        #expect(backup.status == 0, "\(backup.stderr)")
        let restore = try await runAsync(bin, ["repo", "restore", "latest", "-r", repo, "--target", dir.file("out")], environment: env)
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir.file("src/a"))) == Data(contentsOf: URL(fileURLWithPath: dir.file("out/a"))))

        let wrong = try await runAsync(bin, ["repo", "snapshots", "-r", "rest:http://che:not-this-one@127.0.0.1:\(port)/che"], environment: env)
        #expect(wrong.status != 0)
        #expect(wrong.stderr.contains("401"), "\(wrong.stderr)")
        #expect(!wrong.stderr.contains("not-this-one"), "password leaked: \(wrong.stderr)")
        for r in [initialized, backup, restore, wrong] {
            #expect(!r.stdout.contains("rest-pw-123") && !r.stderr.contains("rest-pw-123"))
        }
    }

    @Test func unreachableServerIsOneClearLine() async throws {
        let closed = ClosedPort()
        defer { withExtendedLifetime(closed) {} }
        let port = closed.port
        let r = try await runAsync(bin, ["repo", "snapshots", "-r", "rest:http://che:secret-x@127.0.0.1:\(port)/che", "--quiet"],
                        environment: ["BACKUP_REPOSITORY_PASSWORD": "x"])
        #expect(r.status != 0)
        #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
        #expect(r.stderr.contains("127.0.0.1:\(port)") && r.stderr.contains("attempts"), "\(r.stderr)")
        #expect(!r.stderr.contains("secret-x"))
    }
}
