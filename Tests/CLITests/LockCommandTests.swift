import Foundation
import Testing
import TestSupport

/// Locks from the command line: a backup's shared lock keeps an exclusive command out (one line
/// naming the holder), `--retry-lock` waits for it, SIGTERM and SIGINT remove the lock before the
/// process ends, and a killed holder's lock is stale: it blocks nobody and `repo unlock` removes it.
@Suite struct LockCommandTests {
    let bin = builtProduct("chebackup")
    let env = ["BACKUP_REPOSITORY_PASSWORD": "lock test password"]

    func chebackup(_ args: [String]) async throws -> CommandResult {
        try await runAsync(bin, args, environment: env)
    }

    /// `repo backup --stdin` with its standard input left open: it holds its lock until the pipe closes.
    func waitingBackup(_ repo: String, log: String) throws -> (ChildProcess, Pipe) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: bin)
        process.arguments = ["repo", "backup", "-r", "local:" + repo, "--stdin", "-q"]
        process.environment = ProcessInfo.processInfo.environment.merging(env) { _, new in new }
        let input = Pipe()
        // Only this child may hold the pipe: other tests' children must not inherit its write end.
        _ = fcntl(input.fileHandleForWriting.fileDescriptor, F_SETFD, FD_CLOEXEC)
        process.standardInput = input
        return (try ChildProcess(launching: process, log: log), input)
    }

    func lockFiles(_ repo: String) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: repo + "/locks")) ?? []
    }

    func eventually(_ seconds: Double = 30, _ condition: () -> Bool) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return condition()
    }

    func expectOneLine(_ r: CommandResult, contains text: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(r.status != 0, sourceLocation: sourceLocation)
        #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stderr.contains(text), "\(r.stderr)", sourceLocation: sourceLocation)
    }

    @Test func aBackupsLockKeepsAnExclusiveCommandOutUntilItEnds() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let repo = dir.file("repo")
        #expect(try await chebackup(["repo", "init", "-r", "local:" + repo]).status == 0)
        let (backup, input) = try waitingBackup(repo, log: dir.file("backup.log"))
        #expect(try await eventually { lockFiles(repo).count == 1 }, "the backup took no lock")

        let refused = try await chebackup(["repo", "repair", "snapshots", "-r", "local:" + repo])
        expectOneLine(refused, contains: "is locked: a shared lock (backup) held by PID \(backup.process.processIdentifier) on host \(ProcessInfo.processInfo.hostName)")
        #expect(refused.stderr.contains(", refreshed ") && refused.stderr.contains("s ago"), "\(refused.stderr)")
        // Another backup shares the lock.
        let shared = try await runAsync(bin, ["repo", "backup", "-r", "local:" + repo, "--stdin", "-q"], environment: env, stdin: Data("x".utf8))
        #expect(shared.status == 0, "\(shared.stderr)")

        // With --retry-lock the exclusive command waits, and runs once the backup is done.
        async let waited = chebackup(["repo", "repair", "snapshots", "-r", "local:" + repo, "--retry-lock", "60s"])
        try await Task.sleep(for: .seconds(2))
        #expect(backup.process.isRunning)
        // The backup ends (SIGTERM: it removes its lock on the way out); the waiting command runs.
        try input.fileHandleForWriting.write(contentsOf: Data("some data".utf8))
        kill(backup.process.processIdentifier, SIGTERM)
        let result = try await waited
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("0 damaged snapshots removed"))
        #expect(try await eventually { !backup.process.isRunning })
        #expect(lockFiles(repo).isEmpty, "locks left: \(lockFiles(repo))")
        try? input.fileHandleForWriting.close()
    }

    @Test(arguments: [SIGTERM, SIGINT])
    func aSignalRemovesTheLockBeforeTheProcessEnds(signal: Int32) async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let repo = dir.file("repo")
        #expect(try await chebackup(["repo", "init", "-r", "local:" + repo]).status == 0)
        let (backup, input) = try waitingBackup(repo, log: dir.file("backup.log"))
        defer { try? input.fileHandleForWriting.close() }
        #expect(try await eventually { lockFiles(repo).count == 1 })
        kill(backup.process.processIdentifier, signal)
        #expect(try await eventually { !backup.process.isRunning }, "the backup ignored the signal")
        #expect(backup.process.terminationStatus == 128 + signal)
        #expect(lockFiles(repo).isEmpty, "the lock outlived its process: \(lockFiles(repo))")
        let snapshots = (try? FileManager.default.contentsOfDirectory(atPath: repo + "/snapshots")) ?? []
        #expect(snapshots.isEmpty, "an interrupted backup wrote a snapshot")
    }

    @Test func aKilledHoldersLockIsStaleAndUnlockRemovesIt() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let repo = dir.file("repo")
        #expect(try await chebackup(["repo", "init", "-r", "local:" + repo]).status == 0)
        let (backup, input) = try waitingBackup(repo, log: dir.file("backup.log"))
        defer { try? input.fileHandleForWriting.close() }
        #expect(try await eventually { lockFiles(repo).count == 1 })
        backup.kill(signal: SIGKILL)
        #expect(lockFiles(repo).count == 1, "SIGKILL leaves the lock behind")
        // Its process is gone on this host: it blocks nobody...
        let repair = try await chebackup(["repo", "repair", "snapshots", "-r", "local:" + repo])
        #expect(repair.status == 0, "\(repair.stderr)")
        // ... and unlock removes it (a live lock only with --remove-all).
        let unlock = try await chebackup(["repo", "unlock", "-r", "local:" + repo])
        #expect(unlock.status == 0 && unlock.stdout.contains("removed 1 stale lock"), "\(unlock.stdout)\(unlock.stderr)")
        #expect(lockFiles(repo).isEmpty)
        let (live, liveInput) = try waitingBackup(repo, log: dir.file("live.log"))
        #expect(try await eventually { lockFiles(repo).count == 1 })
        #expect(try await chebackup(["repo", "unlock", "-r", "local:" + repo]).stdout.contains("removed 0 stale locks"))
        #expect(try await chebackup(["repo", "unlock", "-r", "local:" + repo, "--remove-all"]).stdout.contains("removed 1 lock"))
        #expect(lockFiles(repo).isEmpty)
        live.kill(signal: SIGTERM)
        try? liveInput.fileHandleForWriting.close()
    }
}
