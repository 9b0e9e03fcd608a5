import Foundation
@testable import Repository
import Storage
import Testing
import TestSupport

/// Repository locks: shared ones coexist, exclusive ones exclude, stale ones never block and are
/// removed by unlock, a held lock is refreshed and released, and taking one brings the index up to
/// date after a prune removed index files.
@Suite struct LockTests {
    /// A lock as another process (or host) would have written it.
    func foreignLock(_ repo: Repository, exclusive: Bool, host: String = "other-host", pid: Int32 = 4242,
                     age: TimeInterval = 0, operation: String = "prune") async throws -> ObjectID {
        var info = LockInfo(exclusive: exclusive, operation: operation, time: Date().addingTimeInterval(-age))
        info.hostname = host
        info.pid = pid
        info.username = "alice"
        return try await repo.writeLock(info)
    }

    @Test func sharedLocksCoexistAndExclusiveOnesExclude() async throws {
        let repo = try await makeRepository()
        let a = try await repo.lock(exclusive: false, operation: "backup")
        let b = try await repo.lock(exclusive: false, operation: "restore")
        #expect(try await repo.listLocks().count == 2)
        do {
            _ = try await repo.lock(exclusive: true, operation: "prune")
            Issue.record("an exclusive lock was taken beside shared ones")
        } catch let error as RepositoryError {
            #expect(error.code == .locked)
            #expect(error.message.contains("a shared lock (") && error.message.contains("held by PID \(getpid())"), "\(error.message)")
            #expect(!error.message.contains("\n"))
        }
        // The refused lock left nothing behind.
        #expect(try await repo.listLocks().count == 2)
        await a.release()
        await b.release()
        #expect(try await repo.listLocks().isEmpty)
        let exclusive = try await repo.lock(exclusive: true, operation: "prune")
        await #expect(throws: RepositoryError.self) { _ = try await repo.lock(exclusive: false, operation: "backup") }
        await exclusive.release()
        await exclusive.release()  // twice is harmless
    }

    /// What SIGINT and SIGTERM remove (`releaseAll`): every lock object this process wrote,
    /// also one written by `lock()` that no RepositoryLock owns yet because the conflict check is
    /// still running (CI once saw a SIGINT there leave the backup's lock behind), and a held lock
    /// after it was refreshed; nothing in another repository.
    @Test func releaseAllRemovesEveryLockObjectThisProcessWrote() async throws {
        let repo = try await makeRepository()
        let other = try await makeRepository()
        _ = try await repo.writeLock(LockInfo(exclusive: false, operation: "backup"))  // mid-lock()
        let held = try await repo.lock(exclusive: false, operation: "restore")
        await held.refresh()
        let elsewhere = try await other.lock(exclusive: false, operation: "backup")
        #expect(try await repo.listLocks().count == 2)
        await RepositoryLock.releaseAll(in: repo)
        let left = try await repo.listLocks().map(\.id)
        #expect(left.isEmpty, "locks left: \(left)")
        #expect(try await other.listLocks().map(\.id) == [elsewhere.id!])
        await elsewhere.release()
        await held.release()  // its object is gone already: harmless
        #expect(try await other.listLocks().isEmpty)
    }

    @Test func theConflictNamesItsHolderAndAge() async throws {
        let repo = try await makeRepository()
        // Half a second more: the lock's time is stored to the millisecond, so an age of exactly
        // 150 s could read back as 149.9996 s ("2m29s"); a slow machine may add a second or two.
        _ = try await foreignLock(repo, exclusive: true, age: 150.5)
        do {
            _ = try await repo.lock(exclusive: false, operation: "backup")
            Issue.record("a shared lock was taken beside an exclusive one")
        } catch let error as RepositoryError {
            let holder = "an exclusive lock (prune) held by PID 4242 on host other-host by user alice, refreshed "
            #expect(["2m30s", "2m31s", "2m32s"].contains { error.message.contains(holder + $0 + " ago") }, "\(error.message)")
            #expect(error.message.contains("chebackup repo unlock"))
        }
    }

    @Test func staleLocksNeverBlockAndUnlockRemovesOnlyThem() async throws {
        let repo = try await makeRepository()
        let old = try await foreignLock(repo, exclusive: true, age: 31 * 60)
        // A process of this host that is gone: the largest pid cannot be running.
        let dead = try await foreignLock(repo, exclusive: true, host: ProcessInfo.processInfo.hostName, pid: Int32.max)
        let live = try await foreignLock(repo, exclusive: false, age: 60)
        let lock = try await repo.lock(exclusive: false, operation: "backup")
        await lock.release()
        #expect(try await repo.removeLocks(all: false) == 2)
        #expect(Set(try await repo.listLocks().map(\.id)) == [live])
        _ = (old, dead)
        #expect(try await repo.removeLocks(all: true) == 1)
        #expect(try await repo.listLocks().isEmpty)
    }

    @Test func anUnreadableLockBlocksOnlyExclusiveLocks() async throws {
        let storage = MemoryStorage()
        let repo = try await makeRepository(storage)
        let garbage = Data("not a lock".utf8)
        try await storage.save(Handle(.locks, ObjectID(hashing: garbage).hex), data: garbage)
        let shared = try await repo.lock(exclusive: false, operation: "backup")
        await shared.release()
        do {
            _ = try await repo.lock(exclusive: true, operation: "prune")
            Issue.record("an exclusive lock was taken beside an unreadable one")
        } catch let error as RepositoryError {
            #expect(error.message.contains("cannot be read") && error.message.contains("--remove-all"), "\(error.message)")
        }
        #expect(try await repo.removeLocks(all: false) == 0)
        #expect(try await repo.removeLocks(all: true) == 1)
    }

    @Test func retryWaitsForTheHolderToFinish() async throws {
        let repo = try await makeRepository()
        let holder = try await repo.lock(exclusive: true, operation: "prune")
        let released = Locked(false)
        let waiter = Task {
            let lock = try await repo.lock(exclusive: false, operation: "backup", retry: .seconds(30))
            #expect(released.value, "the lock was taken while the exclusive one was held")
            await lock.release()
        }
        try await Task.sleep(for: .milliseconds(1500))
        released.withLock { $0 = true }
        await holder.release()
        try await waiter.value
        // Without enough retry time, it gives up naming the holder.
        let again = try await repo.lock(exclusive: true, operation: "prune")
        let start = ContinuousClock.now
        await #expect(throws: RepositoryError.self) { _ = try await repo.lock(exclusive: false, operation: "backup", retry: .seconds(1)) }
        #expect(ContinuousClock.now - start >= .milliseconds(500))
        await again.release()
    }

    @Test func aHeldLockIsRefreshed() async throws {
        let repo = try await makeRepository()
        let lock = try await repo.lock(exclusive: false, operation: "backup", refreshInterval: .milliseconds(200))
        let first = try #require(lock.id)
        let firstTime = try #require(try await repo.listLocks().first?.info?.time)
        // A liveness wait, not a timing: the refresh comes within seconds even on a loaded machine.
        let deadline = ContinuousClock.now + .seconds(30)
        while lock.id == first && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(lock.id != first, "never refreshed")
        var locks = try await repo.listLocks()
        while locks.count != 1 && ContinuousClock.now < deadline {  // a refresh in flight has both for a moment
            try await Task.sleep(for: .milliseconds(20))
            locks = try await repo.listLocks()
        }
        #expect(locks.count == 1, "the old lock object is removed when the new one is written")
        #expect(locks.first?.id != first)
        #expect((locks.first?.info?.time ?? .distantPast) >= firstTime)
        await lock.release()
        try await Task.sleep(for: .milliseconds(500))
        #expect(try await repo.listLocks().isEmpty, "no refresh after release")
    }

    @Test func takingALockReadsTheIndexAgainWhenAPruneRemovedIndexFiles() async throws {
        let storage = MemoryStorage()
        let repo = try await makeRepository(storage)
        let dir = TempDir()
        defer { dir.remove() }
        try makeSourceTree(in: dir.path)
        _ = try await repo.backup([.path(dir.path, name: "files/t")])
        #expect(repo.index.blobCount > 0)
        // Another process opened the repository before a prune deleted everything.
        let other = try await Repository.open(storage: storage, password: "pw", logger: testLogger)
        for file in try await storage.list(.index) { try await storage.remove(Handle(.index, file.name)) }
        for file in try await storage.list(.data) { try await storage.remove(Handle(.data, file.name)) }
        #expect(other.index.blobCount > 0)
        let lock = try await other.lock(exclusive: false, operation: "backup")
        #expect(other.index.blobCount == 0, "blobs of deleted packs would be taken for stored and never stored again")
        await lock.release()
    }
}
