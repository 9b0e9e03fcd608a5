import Foundation
@testable import Repository
import Storage
import Testing
import TestSupport

/// Forget and prune: space is reclaimed, every kept snapshot still restores bit for bit and the
/// repository checks clean; a prune stopped after any number of its changes loses nothing; a
/// prune refuses to start beside a backup's lock, on a server that refuses deletes, and when a
/// snapshot cannot be read.
@Suite struct PruneTests {
    /// Three snapshots of a tree that changes a little each time (shared and own data), in a
    /// local repository at `dir/repo`; returns the source trees kept for comparison.
    func threeSnapshots(_ dir: TempDir, pool: BlockingPool) async throws -> (Repository, [(SnapshotID, String)]) {
        let storage = LocalStorage(path: dir.file("repo"), pool: pool)
        let repo = try await makeRepository(storage)
        var result: [(SnapshotID, String)] = []
        for i in 0..<3 {
            let source = dir.file("source\(i)")
            try makeSourceTree(in: source, seed: 7)
            var gen = SeededBytes(seed: UInt64(100 + i))
            try gen.data(600_000).write(to: URL(fileURLWithPath: source + "/own-\(i).bin"))
            let backup = try await repo.backup([.path(source, name: "files/t")])
            result.append((backup.id, source))
        }
        return (repo, result)
    }

    func expectRestores(_ repo: Repository, _ kept: [(SnapshotID, String)], _ dir: TempDir, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        for (id, source) in kept {
            let snapshot = try await repo.loadSnapshot(id)
            let target = dir.file("restore-\(id.short)-\(UUID().uuidString.prefix(6))")
            _ = try await Restorer(repository: repo).restoreTree(snapshot.parts[0], into: target)
            #expect(try expectSameTree(source, target).isEmpty, "snapshot \(id.short) does not restore as it was", sourceLocation: sourceLocation)
        }
    }

    func expectChecksClean(_ repo: Repository, orphansAllowed: Bool = false, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let report = try await Checker(repository: repo).check(readData: true)
        #expect(report.errors.isEmpty, "\(report.errors)", sourceLocation: sourceLocation)
        // A kept snapshot whose parent was forgotten is noted; nothing else may be.
        let warnings = report.warnings.filter { !$0.contains("which is no longer in the repository") }
        if !orphansAllowed {
            #expect(warnings.isEmpty, "\(warnings)", sourceLocation: sourceLocation)
        }
    }

    @Test func forgetThenPruneReclaimsSpaceAndKeepsWhatRemains() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let pool = BlockingPool(threads: 4)
        defer { pool.shutdown() }
        let (repo, snapshots) = try await threeSnapshots(dir, pool: pool)
        try await repo.forget([snapshots[0].0])
        // A dry run says what it would do and changes nothing.
        let filesBefore = try await repo.storage.list(.data).map(\.name).sorted()
        var options = Repository.PruneOptions()
        options.dryRun = true
        options.maxUnusedPercent = 0
        let planned = try await repo.prune(options)
        #expect(planned.packsDeleted + planned.packsRepacked > 0)
        #expect(try await repo.storage.list(.data).map(\.name).sorted() == filesBefore)

        options.dryRun = false
        let report = try await repo.prune(options)
        #expect(report.bytesAfter < report.bytesBefore, "\(report)")
        #expect(report.packsDeleted + report.packsRepacked > 0)
        #expect(report.indexFilesReplaced > 0)
        try await expectChecksClean(repo)
        try await expectRestores(repo, Array(snapshots.dropFirst()), dir)
        // The forgotten snapshot's own data is gone: nothing is unreferenced any more.
        let again = try await repo.prune(options)
        #expect(again.packsDeleted == 0 && again.packsRepacked == 0 && again.bytesAfter == report.bytesAfter)
        // A fresh open agrees (only the new index files remain).
        let reopened = try await Repository.open(storage: repo.storage, password: "pw", logger: testLogger)
        try await expectRestores(reopened, Array(snapshots.dropFirst()), dir)
    }

    @Test func withUnlimitedUnusedSpaceOnlyEmptyPacksGo() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let pool = BlockingPool(threads: 4)
        defer { pool.shutdown() }
        let (repo, snapshots) = try await threeSnapshots(dir, pool: pool)
        try await repo.forget([snapshots[1].0])
        var options = Repository.PruneOptions()
        options.maxUnusedPercent = nil
        let report = try await repo.prune(options)
        #expect(report.packsRepacked == 0 && report.packsWritten == 0)
        try await expectChecksClean(repo, orphansAllowed: true)
        try await expectRestores(repo, [snapshots[0], snapshots[2]], dir)
    }

    /// The prune is stopped after 0, 1, 2, … of its changes (as a kill would stop it), for every
    /// point until it completes: each time the repository checks without errors, every kept
    /// snapshot restores, and a second prune then finishes the job.
    @Test func aPruneStoppedAtAnyPointLosesNothing() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let pool = BlockingPool(threads: 4)
        defer { pool.shutdown() }
        let (repo, snapshots) = try await threeSnapshots(dir, pool: pool)
        try await repo.forget([snapshots[0].0])
        let kept = Array(snapshots.dropFirst())
        var options = Repository.PruneOptions()
        options.maxUnusedPercent = 0
        // How many changes a whole prune makes.
        let copy = dir.file("measure")
        #expect(try await runAsync("/bin/cp", ["-a", dir.file("repo"), copy]).status == 0)
        let measuring = CrashingStorage(LocalStorage(path: copy, pool: pool), afterMutations: .max)
        _ = try await Repository.open(storage: measuring, password: "pw", logger: testLogger).prune(options)
        let total = measuring.count
        #expect(total >= 4, "new packs, index, removals: \(total)")
        print("a whole prune makes \(total) changes; each stop point is tried")
        for stop in 0..<total {
            let path = dir.file("crash-\(stop)")
            #expect(try await runAsync("/bin/cp", ["-a", dir.file("repo"), path]).status == 0)
            let crashing = CrashingStorage(LocalStorage(path: path, pool: pool), afterMutations: stop)
            let victim = try await Repository.open(storage: crashing, password: "pw", logger: testLogger)
            await #expect(throws: (any Error).self, "stop \(stop)") { _ = try await victim.prune(options) }
            let after = try await Repository.open(storage: LocalStorage(path: path, pool: pool), password: "pw", logger: testLogger)
            let report = try await Checker(repository: after).check(readData: true)
            #expect(report.errors.isEmpty, "stopped after \(stop) of \(total) changes: \(report.errors)")
            try await expectRestores(after, kept, dir)
            _ = try await after.prune(options)
            try await expectChecksClean(after)
            try await expectRestores(after, kept, dir)
            try FileManager.default.removeItem(atPath: path)
        }
    }

    @Test func aPruneRefusesBesideABackupsLock() async throws {
        let storage = MemoryStorage()
        let repo = try await makeRepository(storage)
        let backup = try await Repository.open(storage: storage, password: "pw", logger: testLogger)
        let lock = try await backup.lock(exclusive: false, operation: "backup")
        do {
            _ = try await repo.withLock(exclusive: true, operation: "prune") { _ in try await repo.prune() }
            Issue.record("a prune ran beside a backup")
        } catch let error as RepositoryError {
            #expect(error.code == .locked)
            #expect(error.message.contains("a shared lock (backup)"), "\(error.message)")
        }
        await lock.release()
    }

    /// A backend that refuses deletes other than of locks, as an append-only server does.
    final class AppendOnly: Storage {
        let base: any Storage
        init(_ base: any Storage) { self.base = base }
        var location: String { base.location }
        var defaultConnections: Int { base.defaultConnections }
        func create() async throws { try await base.create() }
        func save(_ handle: Handle, data: Data) async throws { try await base.save(handle, data: data) }
        func saveNew(_ handle: Handle, data: Data) async throws { try await base.saveNew(handle, data: data) }
        func makeStagingFile(for type: FileType) throws -> StagedFile { try base.makeStagingFile(for: type) }
        func save(_ handle: Handle, staged: StagedFile) async throws { try await base.save(handle, staged: staged) }
        func load(_ handle: Handle, range: Range<Int64>?) async throws -> Data { try await base.load(handle, range: range) }
        func stat(_ handle: Handle) async throws -> FileInfo { try await base.stat(handle) }
        func list(_ type: FileType) async throws -> [FileInfo] { try await base.list(type) }
        func remove(_ handle: Handle) async throws {
            guard handle.type == .locks else { throw StorageError(.accessDenied, "DELETE \(handle.type.rawValue)/\(handle.name): HTTP 403 Forbidden") }
            try await base.remove(handle)
        }
    }

    @Test func aPruneOnAnAppendOnlyServerChangesNothing() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let pool = BlockingPool(threads: 4)
        defer { pool.shutdown() }
        let (repo, snapshots) = try await threeSnapshots(dir, pool: pool)
        try await repo.forget([snapshots[0].0])
        let before = try await repo.storage.list(.data).map(\.name).sorted() + repo.storage.list(.index).map(\.name).sorted()
        let appendOnly = try await Repository.open(storage: AppendOnly(repo.storage), password: "pw", logger: testLogger)
        var options = Repository.PruneOptions()
        options.maxUnusedPercent = 0
        do {
            _ = try await appendOnly.prune(options)
            Issue.record("prune ran on an append-only server")
        } catch let error as RepositoryError {
            #expect(error.message.contains("refuses deletes (an append-only server?)") && error.message.contains("nothing was changed"), "\(error.message)")
        }
        let after = try await repo.storage.list(.data).map(\.name).sorted() + repo.storage.list(.index).map(\.name).sorted()
        #expect(after == before)
    }

    @Test func aDamagedSnapshotStopsThePruneBeforeAnythingIsDeleted() async throws {
        let storage = MemoryStorage()
        let repo = try await makeRepository(storage)
        let dir = TempDir()
        defer { dir.remove() }
        try makeSourceTree(in: dir.path)
        let first = try await repo.backup([.path(dir.path, name: "files/t")])
        try await repo.forget([first.id])
        _ = try await repo.backup([.path(dir.path, name: "files/t")])
        let garbage = Data("damaged snapshot".utf8)
        try await storage.save(Handle(.snapshots, ObjectID(hashing: garbage).hex), data: garbage)
        let packs = try await storage.list(.data).count
        do {
            _ = try await repo.prune()
            Issue.record("prune ignored a damaged snapshot")
        } catch let error as RepositoryError {
            #expect(error.message.contains("nothing was deleted") && error.message.contains("repair snapshots"), "\(error.message)")
        }
        #expect(try await storage.list(.data).count == packs)
        await #expect(throws: RepositoryError.self) { try await repo.forget([ObjectID(hashing: Data("no such".utf8))]) }
    }
}
