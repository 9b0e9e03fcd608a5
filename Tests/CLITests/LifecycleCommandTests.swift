import Foundation
import Testing
import TestSupport

/// `repo forget` and `repo prune` as a user runs them: a policy's table, a dry run that changes
/// nothing, forget --prune reclaiming space with the kept snapshots restoring byte for byte and
/// check --read-data clean, and every bad input one line.
@Suite struct LifecycleCommandTests {
    let bin = builtProduct("chebackup")
    let env = ["BACKUP_REPOSITORY_PASSWORD": "lifecycle test password"]

    func chebackup(_ args: [String]) async throws -> CommandResult {
        try await runAsync(bin, args, environment: env)
    }

    func snapshotIDs(_ repo: String) async throws -> [String] {
        let r = try await chebackup(["repo", "snapshots", "-r", "local:" + repo, "--json"])
        let list = try JSONSerialization.jsonObject(with: r.stdoutData) as? [[String: Any]] ?? []
        return list.compactMap { $0["id"] as? String }
    }

    @Test func forgetWithAPolicyThenPruneKeepsTheKeptOnesWhole() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let repo = dir.file("repo")
        #expect(try await chebackup(["repo", "init", "-r", "local:" + repo]).status == 0)
        // Four backups of a directory whose big file is replaced each time: each snapshot has data of its own.
        var gen = SeededBytes(seed: 99)
        let src = dir.file("src")
        try FileManager.default.createDirectory(atPath: src, withIntermediateDirectories: true)
        var contents: [Data] = []
        for i in 0..<4 {
            let data = gen.data(2_000_000)
            contents.append(data)
            try data.write(to: URL(fileURLWithPath: src + "/big.bin"))
            let r = try await chebackup(["repo", "backup", "-r", "local:" + repo, src, "-q", "--tag", "n\(i)"])
            #expect(r.status == 0, "\(r.stderr)")
        }
        #expect(try await snapshotIDs(repo).count == 4)

        let dry = try await chebackup(["repo", "forget", "-r", "local:" + repo, "--keep-last", "2", "--dry-run"])
        #expect(dry.status == 0, "\(dry.stderr)")
        #expect(dry.stdout.contains("2 kept, 2 would be removed"), "\(dry.stdout)")
        #expect(dry.stdout.split(separator: "\n").filter { $0.contains(" keep ") && $0.contains("last snapshot") }.count == 2)
        #expect(dry.stdout.split(separator: "\n").filter { $0.contains(" remove ") }.count == 2)
        #expect(try await snapshotIDs(repo).count == 4, "a dry run removed snapshots")

        let sizeBefore = try await runAsync("/usr/bin/du", ["-sb", repo + "/data"]).stdout.split(separator: "\t").first.flatMap { Int($0) } ?? 0
        let forget = try await chebackup(["repo", "forget", "-r", "local:" + repo, "--keep-last", "2", "--prune", "--max-unused", "0%"])
        #expect(forget.status == 0, "\(forget.stderr)")
        #expect(forget.stdout.contains("2 kept, 2 removed"))
        #expect(forget.stdout.contains("before:") && forget.stdout.contains("after:"), "\(forget.stdout)")
        let sizeAfter = try await runAsync("/usr/bin/du", ["-sb", repo + "/data"]).stdout.split(separator: "\t").first.flatMap { Int($0) } ?? 0
        #expect(sizeAfter < sizeBefore * 2 / 3, "the data of two of four snapshots should be gone: \(sizeBefore) -> \(sizeAfter)")
        #expect(try await snapshotIDs(repo).count == 2)
        let check = try await chebackup(["repo", "check", "-r", "local:" + repo, "--read-data"])
        #expect(check.status == 0 && check.stdout.contains("no errors were found"), "\(check.stdout)\(check.stderr)")
        #expect(!check.stdout.contains("belong to no snapshot"))
        // The kept ones restore exactly: the newest has the last content.
        let restore = try await chebackup(["repo", "restore", "-r", "local:" + repo, "latest", "--target", dir.file("out")])
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir.file("out/big.bin"))) == contents[3])

        // Removing one by id; then prune on its own.
        let ids = try await snapshotIDs(repo)
        let one = try await chebackup(["repo", "forget", "-r", "local:" + repo, String(ids[0].prefix(8))])
        #expect(one.status == 0 && one.stdout.contains("0 kept, 1 removed"), "\(one.stdout)\(one.stderr)")
        let prune = try await chebackup(["repo", "prune", "-r", "local:" + repo, "--json"])
        #expect(prune.status == 0, "\(prune.stderr)")
        let summary = try JSONSerialization.jsonObject(with: prune.stdoutData) as? [String: Any] ?? [:]
        #expect((summary["bytesAfter"] as? Int ?? .max) < (summary["bytesBefore"] as? Int ?? 0), "\(summary)")
        let restoreLast = try await chebackup(["repo", "restore", "-r", "local:" + repo, "latest", "--target", dir.file("out2")])
        #expect(restoreLast.status == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir.file("out2/big.bin"))) == contents[3])
    }

    @Test(arguments: [
        (["repo", "forget"], "no policy given, nothing would be kept"),
        (["repo", "forget", "--keep-last=-5"], "keep"),
        (["repo", "forget", "--keep-within", "3x"], "--keep-within"),
        (["repo", "forget", "--keep-last", "1", "--keep-none"], "contradict"),
        (["repo", "forget", "abcdef12", "--keep-last", "1"], "give snapshot ids or a policy, not both"),
        (["repo", "forget", "abcdef12"], "no snapshot with id abcdef12"),
        (["repo", "forget", "xyz"], "invalid snapshot id"),
        (["repo", "prune", "--max-unused", "150%"], "--max-unused takes a percentage below 100"),
    ])
    func badInputIsOneLine(arguments: [String], expected: String) async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let repo = dir.file("repo")
        #expect(try await chebackup(["repo", "init", "-r", "local:" + repo]).status == 0)
        let r = try await chebackup(arguments + ["-r", "local:" + repo])
        #expect(r.status != 0)
        #expect(r.stderr.contains(expected), "\(r.stderr)")
        let lines = r.stderr.split(separator: "\n").filter { !$0.hasPrefix("Usage:") && !$0.contains("--help") }
        #expect(lines.count == 1, "\(r.stderr)")
    }
}

/// Against the real `chebackup rest-server --append-only`: forget and prune are refused with one
/// line naming the reason, and nothing is deleted.
@Suite struct AppendOnlyLifecycleTests {
    @Test func forgetAndPruneAreRefusedAndNothingIsDeleted() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let port = freeLoopbackPort()
        try FileManager.default.createDirectory(atPath: dir.file("data"), withIntermediateDirectories: true)
        let server = try ChildProcess(builtProduct("chebackup"), ["rest-server", "--path", dir.file("data"), "--listen", "127.0.0.1:\(port)", "--append-only"],
                                      log: dir.file("server.log"))
        defer { server.kill() }
        #expect(await waitForPortAsync(port, seconds: 90))
        let env = ["BACKUP_REPOSITORY_PASSWORD": "append only pw"]
        let url = "rest:http://127.0.0.1:\(port)/che"
        #expect(try await runAsync(builtProduct("chebackup"), ["repo", "init", "-r", url], environment: env).status == 0)
        try FileManager.default.createDirectory(atPath: dir.file("src"), withIntermediateDirectories: true)
        for i in 0..<2 {
            var gen = SeededBytes(seed: UInt64(i + 1))
            try gen.data(300_000).write(to: URL(fileURLWithPath: dir.file("src/f.bin")))
            #expect(try await runAsync(builtProduct("chebackup"), ["repo", "backup", "-r", url, dir.file("src"), "-q"], environment: env).status == 0)
        }
        func files() throws -> [String] {
            try FileManager.default.subpathsOfDirectory(atPath: dir.file("data/che")).filter { !$0.hasPrefix("locks") }.sorted()
        }
        let before = try files()
        let forget = try await runAsync(builtProduct("chebackup"), ["repo", "forget", "-r", url, "--keep-last", "1"], environment: env)
        #expect(forget.status != 0, "\(forget.stdout)")
        #expect(forget.stderr.contains("403") || forget.stderr.contains("append-only"), "\(forget.stderr)")
        #expect(try files() == before, "forget deleted something on an append-only server")
        // Give prune something to delete: a snapshot forgotten on the server's own directory,
        // where deletes are allowed. Through the append-only server it is refused all the same.
        let direct = "local:" + dir.file("data/che")
        let forgotten = try await runAsync(builtProduct("chebackup"), ["repo", "forget", "-r", direct, "--keep-last", "1"], environment: env)
        #expect(forgotten.status == 0, "\(forgotten.stderr)")
        let afterForget = try files()
        let prune = try await runAsync(builtProduct("chebackup"), ["repo", "prune", "-r", url, "--max-unused", "0%"], environment: env)
        #expect(prune.status != 0, "\(prune.stdout)")
        #expect(prune.stderr.contains("refuses deletes (an append-only server?)") && prune.stderr.split(separator: "\n").count == 1, "\(prune.stderr)")
        #expect(try files() == afterForget, "prune changed an append-only repository")
        // Locks may be deleted there: none is left behind.
        let locks = (try? FileManager.default.contentsOfDirectory(atPath: dir.file("data/che/locks"))) ?? []
        #expect(locks.isEmpty, "\(locks)")
    }
}
