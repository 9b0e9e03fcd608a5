import Foundation
import Testing
import TestSupport

/// End-to-end tests of the `chebackup repo` commands, run as a user runs them.
@Suite struct RepoCommandTests {
    let bin = builtProduct("chebackup")
    let password = "correct horse battery staple"

    func chebackup(_ args: [String], password: String? = nil, stdin: Data? = nil) async throws -> CommandResult {
        try await runAsync(bin, args, environment: ["BACKUP_REPOSITORY_PASSWORD": password ?? self.password], stdin: stdin)
    }

    /// Initialises a repository in `dir` with small chunks (many chunks from small test data).
    func initRepo(_ dir: TempDir) async throws -> String {
        let repo = dir.file("repo")
        let r = try await chebackup(["repo", "init", "-r", "local:" + repo, "--average-chunk-size", "65536", "--pack-size", "1048576"])
        #expect(r.status == 0, "init failed: \(r.stderr)")
        return repo
    }

    func expectOneLineError(_ r: CommandResult, contains text: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(r.status != 0, "expected failure, got success: \(r.stdout)", sourceLocation: sourceLocation)
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1, "expected one error line, got: \(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stderr.contains(text), "error should mention \"\(text)\": \(r.stderr)", sourceLocation: sourceLocation)
        #expect(!r.stderr.contains(password) && !r.stdout.contains(password), "password leaked", sourceLocation: sourceLocation)
    }

    func snapshotID(_ r: CommandResult) throws -> String {
        let line = try #require(r.stdout.split(separator: "\n").first { $0.hasPrefix("Backup snapshot ID: ") })
        let id = String(line.dropFirst("Backup snapshot ID: ".count))
        #expect(id.count == 8 && id.allSatisfy(\.isHexDigit), "bad id \(id)")
        return id
    }

    @Test func backupSnapshotsRestoreCheck() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let repo = try await initRepo(dir)
        var gen = SeededBytes(seed: 21)
        try FileManager.default.createDirectory(atPath: dir.file("src/sub/empty"), withIntermediateDirectories: true)
        try gen.data(700_000).write(to: URL(fileURLWithPath: dir.file("src/sub/random")))
        try gen.text(900_000).write(to: URL(fileURLWithPath: dir.file("src/text")))
        try FileManager.default.createSymbolicLink(atPath: dir.file("src/link"), withDestinationPath: "sub/random")

        let backup = try await chebackup(["repo", "backup", "-r", repo, dir.file("src")])
        #expect(backup.status == 0, "\(backup.stderr)")
        let id = try snapshotID(backup)
        #expect(!backup.stderr.contains("\r"), "no progress output when stderr is not a terminal")

        let list = try await chebackup(["repo", "snapshots", "-r", repo, "--json"])
        #expect(list.status == 0)
        let rows = try #require(try JSONSerialization.jsonObject(with: list.stdoutData) as? [[String: Any]])
        #expect(rows.count == 1)
        #expect((rows[0]["id"] as? String)?.hasPrefix(id) == true)
        #expect(rows[0]["bytes"] as? Int == 1_600_000)

        let restore = try await chebackup(["repo", "restore", String(id.prefix(5)), "-r", repo, "--target", dir.file("out")])
        #expect(restore.status == 0, "\(restore.stderr)")
        for path in ["sub/random", "text"] {
            #expect(try Data(contentsOf: URL(fileURLWithPath: dir.file("src/" + path))) ==
                    Data(contentsOf: URL(fileURLWithPath: dir.file("out/" + path))))
        }
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: dir.file("out/link")) == "sub/random")
        #expect(FileManager.default.fileExists(atPath: dir.file("out/sub/empty")))

        let check = try await chebackup(["repo", "check", "--read-data", "-r", repo])
        #expect(check.status == 0, "\(check.stderr)")
        #expect(check.stdout.contains("no errors were found"))
    }

    @Test func streamFromStdinToStdout() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let repo = try await initRepo(dir)
        var gen = SeededBytes(seed: 22)
        let dump = gen.text(1_500_000) + gen.data(500_000)
        let backup = try await chebackup(["repo", "backup", "-r", repo, "--stdin", "--stdin-name", "dbche.dump"], stdin: dump)
        #expect(backup.status == 0, "\(backup.stderr)")
        _ = try snapshotID(backup)
        let restore = try await chebackup(["repo", "restore", "latest", "-r", repo, "--stdout"])
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect(restore.stdoutData == dump)
        let verified = try await chebackup(["repo", "restore", "latest", "-r", repo, "--stdout", "--verify-ids"])
        #expect(verified.status == 0, "\(verified.stderr)")
        #expect(verified.stdoutData == dump)
    }

    @Test func treeAndStreamInOneSnapshot() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let repo = try await initRepo(dir)
        var gen = SeededBytes(seed: 24)
        try FileManager.default.createDirectory(atPath: dir.file("workspace/projects"), withIntermediateDirectories: true)
        let file = gen.text(200_000)
        try file.write(to: URL(fileURLWithPath: dir.file("workspace/projects/main.go")))
        let dump = gen.data(300_000)
        let backup = try await chebackup(["repo", "backup", "-r", repo, dir.file("workspace"), "--stdin", "--stdin-name", "keycloak.dump"],
                                   stdin: dump)
        #expect(backup.status == 0, "\(backup.stderr)")
        let stream = try await chebackup(["repo", "restore", "latest", "-r", repo, "--stdout", "--part", "keycloak.dump"])
        #expect(stream.stdoutData == dump)
        let all = try await chebackup(["repo", "restore", "latest", "-r", repo, "--target", dir.file("out")])
        #expect(all.status == 0, "\(all.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir.file("out/workspace/projects/main.go"))) == file)
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir.file("out/keycloak.dump"))) == dump)
        let missing = try await chebackup(["repo", "restore", "latest", "-r", repo, "--stdout", "--part", "nope"])
        expectOneLineError(missing, contains: "no part \"nope\"")
    }

    @Test func wrongPasswordIsOneClearLine() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let repo = try await initRepo(dir)
        let r = try await chebackup(["repo", "snapshots", "-r", repo], password: "not the password")
        expectOneLineError(r, contains: "wrong password")
        #expect(!r.stderr.contains("not the password"))
    }

    @Test func notARepository() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        expectOneLineError(try await chebackup(["repo", "snapshots", "-r", dir.path]), contains: "no repository")
        expectOneLineError(try await chebackup(["repo", "snapshots", "-r", "ftp:example/x"]), contains: "unknown repository type")
    }

    @Test func unknownAndInvalidSnapshotIDs() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let repo = try await initRepo(dir)
        expectOneLineError(try await chebackup(["repo", "restore", "latest", "-r", repo, "--target", dir.file("o")]), contains: "no snapshots")
        _ = try await chebackup(["repo", "backup", "-r", repo, "--stdin"], stdin: Data("x".utf8))
        expectOneLineError(try await chebackup(["repo", "restore", "ffffffffff", "-r", repo, "--target", dir.file("o")]),
                           contains: "no snapshot with id ffffffffff")
        expectOneLineError(try await chebackup(["repo", "restore", "zz", "-r", repo, "--target", dir.file("o")]),
                           contains: "invalid snapshot id")
    }

    @Test func unreadableSourceLeavesNoSnapshot() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let repo = try await initRepo(dir)
        expectOneLineError(try await chebackup(["repo", "backup", "-r", repo, "/proc/self/mem"]), contains: "/proc/self/mem")
        expectOneLineError(try await chebackup(["repo", "backup", "-r", repo, dir.file("missing")]), contains: "missing")
        #expect(try FileManager.default.contentsOfDirectory(atPath: repo + "/snapshots").isEmpty)
    }

    @Test func corruptedPackIsNamedByCheckAndRestore() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let repo = try await initRepo(dir)
        var gen = SeededBytes(seed: 23)
        let data = gen.data(3_000_000)
        _ = try await chebackup(["repo", "backup", "-r", repo, "--stdin"], stdin: data)
        // Flip one byte in the middle of the largest pack.
        let packs = try FileManager.default.subpathsOfDirectory(atPath: repo + "/data").filter { $0.count > 60 }
        let largest = try #require(packs.max { a, b in
            (try? FileManager.default.attributesOfItem(atPath: repo + "/data/" + a)[.size] as? Int ?? 0) ?? 0 <
            (try? FileManager.default.attributesOfItem(atPath: repo + "/data/" + b)[.size] as? Int ?? 0) ?? 0
        })
        let path = repo + "/data/" + largest
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[bytes.count / 2] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: path))
        let name = String((largest as NSString).lastPathComponent.prefix(8))

        let check = try await chebackup(["repo", "check", "--read-data", "-r", repo])
        #expect(check.status != 0)
        #expect(check.stderr.contains(name), "check should name pack \(name): \(check.stderr)")
        let restore = try await chebackup(["repo", "restore", "latest", "-r", repo, "--stdout"])
        #expect(restore.status != 0)
        #expect(restore.stderr.contains(name) && restore.stderr.contains("corrupted"), "\(restore.stderr)")
    }

    /// `repo repair index` and `repo repair snapshots` as a user runs them: a damaged index file
    /// is worked around with a warning and rebuilt from the packs; a damaged snapshot file is
    /// removed and the others stay; bad input is one line and changes nothing.
    @Test func repairRebuildsTheIndexAndDropsDamagedSnapshots() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let repo = try await initRepo(dir)
        var gen = SeededBytes(seed: 29)
        try FileManager.default.createDirectory(atPath: dir.file("src"), withIntermediateDirectories: true)
        try gen.data(600_000).write(to: URL(fileURLWithPath: dir.file("src/a")))
        let first = try await chebackup(["repo", "backup", "-r", repo, dir.file("src")])
        try gen.data(400_000).write(to: URL(fileURLWithPath: dir.file("src/b")))
        let second = try await chebackup(["repo", "backup", "-r", repo, dir.file("src")])
        #expect(first.status == 0 && second.status == 0, "\(first.stderr)\(second.stderr)")
        func files(_ sub: String) throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: repo + "/" + sub).filter { $0.count == 64 }.sorted()
        }
        func damage(_ path: String) throws {
            var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            bytes[bytes.count / 2] ^= 0x40
            try bytes.write(to: URL(fileURLWithPath: path))
        }

        // Bad input first: nothing may change.
        let before = try files("index")
        expectOneLineError(try await chebackup(["repo", "repair", "index", "-r", repo], password: "wrong"), contains: "wrong password")
        expectOneLineError(try await chebackup(["repo", "repair", "index", "-r", "local:" + dir.file("nothing")]), contains: "no repository at")
        let unknown = try await chebackup(["repo", "repair", "everything"])
        #expect(unknown.status != 0 && unknown.stderr.contains("everything"), "\(unknown.stderr)")
        #expect(try files("index") == before)

        // A damaged index file: snapshots still list (with a warning), repair rebuilds it.
        for name in before { try damage(repo + "/index/" + name) }
        let listed = try await chebackup(["repo", "snapshots", "-r", repo])
        #expect(listed.status == 0, "\(listed.stderr)")
        #expect(listed.stderr.contains("index"), "a warning names the damaged index: \(listed.stderr)")
        let repaired = try await chebackup(["repo", "repair", "index", "-r", repo])
        #expect(repaired.status == 0, "\(repaired.stderr)")
        #expect(repaired.stdout.contains("replaced \(before.count) index files"), "\(repaired.stdout)")
        #expect(Set(try files("index")).isDisjoint(with: before))
        let check = try await chebackup(["repo", "check", "--read-data", "-r", repo])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        let restore = try await chebackup(["repo", "restore", "latest", "-r", repo, "--target", dir.file("out")])
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir.file("out/b"))) == Data(contentsOf: URL(fileURLWithPath: dir.file("src/b"))))

        // A damaged snapshot file is removed; the other snapshot stays and restores.
        let snapshots = try files("snapshots")
        #expect(snapshots.count == 2)
        try damage(repo + "/snapshots/" + snapshots[0])
        let dropped = try await chebackup(["repo", "repair", "snapshots", "-r", repo])
        #expect(dropped.status == 0, "\(dropped.stderr)")
        #expect(dropped.stdout.contains("removed damaged snapshot \(snapshots[0])") && dropped.stdout.contains("1 damaged snapshots removed"),
                "\(dropped.stdout)")
        #expect(try files("snapshots") == [snapshots[1]])
        let again = try await chebackup(["repo", "repair", "snapshots", "-r", repo])
        #expect(again.status == 0 && again.stdout.contains("0 damaged snapshots removed"), "\(again.stdout)")
        let kept = try await chebackup(["repo", "restore", String(snapshots[1].prefix(8)), "-r", repo, "--target", dir.file("out2")])
        #expect(kept.status == 0, "\(kept.stderr)")
    }

    /// restic's rules for `--target`: a regular file is refused and left as it was (it used to
    /// be replaced by a directory, exit 0); a non-empty directory only with --overwrite; a new or
    /// empty directory is fine.
    @Test func restoreTargetRules() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let repo = try await initRepo(dir)
        try FileManager.default.createDirectory(atPath: dir.file("src"), withIntermediateDirectories: true)
        let content = Data("restored content\n".utf8)
        try content.write(to: URL(fileURLWithPath: dir.file("src/f")))
        #expect(try await chebackup(["repo", "backup", "-r", repo, dir.file("src")]).status == 0)

        let precious = Data("do not replace me\n".utf8)
        try precious.write(to: URL(fileURLWithPath: dir.file("file")))
        for extra in [[], ["--overwrite"]] {
            let r = try await chebackup(["repo", "restore", "latest", "-r", repo, "--target", dir.file("file")] + extra)
            expectOneLineError(r, contains: "\(dir.file("file")) exists and is not a directory")
            #expect(try Data(contentsOf: URL(fileURLWithPath: dir.file("file"))) == precious, "the file was changed")
        }

        try FileManager.default.createDirectory(atPath: dir.file("full"), withIntermediateDirectories: true)
        try precious.write(to: URL(fileURLWithPath: dir.file("full/f")))
        let refused = try await chebackup(["repo", "restore", "latest", "-r", repo, "--target", dir.file("full")])
        expectOneLineError(refused, contains: "is not empty")
        #expect(refused.stderr.contains("--overwrite"), "\(refused.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir.file("full/f"))) == precious, "a refused restore wrote")
        let overwritten = try await chebackup(["repo", "restore", "latest", "-r", repo, "--target", dir.file("full"), "--overwrite"])
        #expect(overwritten.status == 0, "\(overwritten.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir.file("full/f"))) == content)

        try FileManager.default.createDirectory(atPath: dir.file("empty"), withIntermediateDirectories: true)
        for target in ["empty", "new/deeper"] {
            let r = try await chebackup(["repo", "restore", "latest", "-r", repo, "--target", dir.file(target)])
            #expect(r.status == 0, "\(target): \(r.stderr)")
            #expect(try Data(contentsOf: URL(fileURLWithPath: dir.file(target + "/f"))) == content)
        }
    }

    /// Several `repo init` at once on one location: exactly one succeeds, the others fail with
    /// one line saying it is already a repository, and the winner's password opens it (two inits
    /// used to both succeed with different keys, leaving a password that opens nothing).
    @Test(arguments: ["local", "rest (rclone)"])
    func concurrentInitsHaveOneWinner(_ backend: String) async throws {
        if backend != "local" && !TestServices.available(TestServices.rcloneURL) { return }
        for _ in 0..<3 {
            let dir = TempDir()
            defer { dir.remove() }
            let repo = backend == "local" ? "local:" + dir.file("repo") : (TestServices.rcloneURL ?? "rest:http://127.0.0.1:1/") + TestServices.unique("init")
            let passwords = (0..<3).map { "password number \($0)" }
            let all = await withTaskGroup(of: (Int, CommandResult?).self) { group in
                for (i, password) in passwords.enumerated() {
                    group.addTask { [bin] in
                        (i, try? await runAsync(bin, ["repo", "init", "-r", repo], environment: ["BACKUP_REPOSITORY_PASSWORD": password]))
                    }
                }
                var all: [Int: CommandResult] = [:]
                for await (i, r) in group { all[i] = r }
                return all
            }
            let winners = all.filter { $0.value.status == 0 }.map(\.key)
            #expect(all.count == passwords.count && winners.count == 1, "\(winners.count) inits succeeded: \(all.mapValues(\.stderr))")
            guard let winner = winners.first else { continue }
            for (i, r) in all where i != winner {
                #expect(r.status != 0)
                #expect(r.stderr.split(separator: "\n").count == 1 && r.stderr.contains("is already a repository"), "\(r.stderr)")
                expectOneLineError(try await chebackup(["repo", "snapshots", "-r", repo], password: passwords[i]), contains: "wrong password")
            }
            let opened = try await chebackup(["repo", "snapshots", "-r", repo], password: passwords[winner])
            #expect(opened.status == 0, "the winner's password does not open the repository: \(opened.stderr)")
            if backend == "local" {
                #expect(try FileManager.default.contentsOfDirectory(atPath: dir.file("repo/keys")).count == 1, "the losers' key files stayed")
            }
        }
    }

    @Test func badArgumentsAreRefused() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let r = try await chebackup(["repo", "backup", "-r", dir.path])
        let twice = try await chebackup(["repo", "backup", "-r", try await initRepo(dir), dir.path, dir.path + "/"])
        #expect(twice.status != 0 && twice.stderr.contains("must be unique"), "\(twice.stderr)")
        #expect(r.status != 0)
        #expect(r.stderr.contains("nothing to back up"))
        let noRepo = try await runAsync(bin, ["repo", "snapshots"], environment: ["BACKUP_REPOSITORY_PASSWORD": "x"])
        #expect(noRepo.status != 0 && noRepo.stderr.contains("no repository given"))
    }
}
