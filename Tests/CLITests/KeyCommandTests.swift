import Foundation
import Testing
import TestSupport

/// `repo key list|add|remove|passwd`: several passwords open one repository; the key in use and
/// the last key cannot be removed; a new password never comes from an argument.
@Suite struct KeyCommandTests {
    let bin = builtProduct("chebackup")

    func chebackup(_ args: [String], password: String) async throws -> CommandResult {
        try await runAsync(bin, args, environment: ["BACKUP_REPOSITORY_PASSWORD": password])
    }

    func keys(_ repo: String, password: String) async throws -> [[String: Any]] {
        let r = try await chebackup(["repo", "key", "list", "-r", "local:" + repo, "--json"], password: password)
        #expect(r.status == 0, "\(r.stderr)")
        return try JSONSerialization.jsonObject(with: r.stdoutData) as? [[String: Any]] ?? []
    }

    @Test func passwordsAreAddedChangedAndRemovedSafely() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let repo = dir.file("repo")
        let (first, second, third) = ("first key password", "second key password", "third key password")
        #expect(try await chebackup(["repo", "init", "-r", "local:" + repo], password: first).status == 0)
        try "\(second)\n".write(toFile: dir.file("second"), atomically: true, encoding: .utf8)
        try "\(third)\n".write(toFile: dir.file("third"), atomically: true, encoding: .utf8)

        let add = try await chebackup(["repo", "key", "add", "-r", "local:" + repo, "--new-password-file", dir.file("second")], password: first)
        #expect(add.status == 0 && add.stdout.hasPrefix("added key "), "\(add.stdout)\(add.stderr)")
        // Both passwords open it; each sees its own key marked as the one in use.
        let seenByFirst = try await keys(repo, password: first)
        let seenBySecond = try await keys(repo, password: second)
        #expect(seenByFirst.count == 2 && seenBySecond.count == 2)
        let firstKey = try #require(seenByFirst.first { $0["current"] as? Bool == true }?["id"] as? String)
        let secondKey = try #require(seenBySecond.first { $0["current"] as? Bool == true }?["id"] as? String)
        #expect(firstKey != secondKey)

        // The key in use cannot be removed, an unknown one is named.
        let own = try await chebackup(["repo", "key", "remove", "-r", "local:" + repo, String(firstKey.prefix(8))], password: first)
        #expect(own.status != 0 && own.stderr.contains("is the one in use"), "\(own.stderr)")
        let unknown = try await chebackup(["repo", "key", "remove", "-r", "local:" + repo, "abcdef99"], password: first)
        #expect(unknown.status != 0 && unknown.stderr.contains("no key with id abcdef99"), "\(unknown.stderr)")
        #expect(unknown.stderr.split(separator: "\n").count == 1)
        // Another can: the second password removes the first key.
        let removed = try await chebackup(["repo", "key", "remove", "-r", "local:" + repo, String(firstKey.prefix(8))], password: second)
        #expect(removed.status == 0, "\(removed.stderr)")
        let gone = try await chebackup(["repo", "snapshots", "-r", "local:" + repo], password: first)
        #expect(gone.status != 0 && gone.stderr.contains("wrong password"), "\(gone.stderr)")
        // Now the second key is the last one, and it is in use.
        #expect(try await keys(repo, password: second).count == 1)

        // passwd: the third password replaces the second.
        let passwd = try await chebackup(["repo", "key", "passwd", "-r", "local:" + repo, "--new-password-file", dir.file("third")], password: second)
        #expect(passwd.status == 0 && passwd.stdout.contains("password changed"), "\(passwd.stdout)\(passwd.stderr)")
        #expect(try await chebackup(["repo", "snapshots", "-r", "local:" + repo], password: second).stderr.contains("wrong password"))
        let thirdKeys = try await keys(repo, password: third)
        #expect(thirdKeys.count == 1 && thirdKeys.first?["current"] as? Bool == true)
        for r in [add, own, unknown, removed, passwd] {
            for p in [first, second, third] { #expect(!r.stdout.contains(p) && !r.stderr.contains(p), "a password was printed") }
        }
    }

    @Test func theLastKeyAndBadNewPasswordsAreRefused() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let repo = dir.file("repo")
        let password = "only key password"
        #expect(try await chebackup(["repo", "init", "-r", "local:" + repo], password: password).status == 0)
        let only = try #require(try await keys(repo, password: password).first?["id"] as? String)
        // Another process's view: the key is the last (and, seen from itself, the one in use).
        let last = try await chebackup(["repo", "key", "remove", "-r", "local:" + repo, only], password: password)
        #expect(last.status != 0 && (last.stderr.contains("is the one in use") || last.stderr.contains("is the last key")), "\(last.stderr)")
        try "\n".write(toFile: dir.file("empty"), atomically: true, encoding: .utf8)
        let empty = try await chebackup(["repo", "key", "add", "-r", "local:" + repo, "--new-password-file", dir.file("empty")], password: password)
        #expect(empty.status != 0 && empty.stderr.contains("is empty"), "\(empty.stderr)")
        let noTerminal = try await runAsync("/usr/bin/setsid", ["--wait", bin, "repo", "key", "add", "-r", "local:" + repo],
                                            environment: ["BACKUP_REPOSITORY_PASSWORD": password], stdin: Data())
        #expect(noTerminal.status != 0 && noTerminal.stderr.contains("no terminal to ask for the new password"), "\(noTerminal.stderr)")
        let missing = try await chebackup(["repo", "key", "add", "-r", "local:" + repo, "--new-password-file", dir.file("nope")], password: password)
        #expect(missing.status != 0 && missing.stderr.contains("cannot read the new password file"), "\(missing.stderr)")
        #expect(try await keys(repo, password: password).count == 1, "a refused add added a key")
    }
}
