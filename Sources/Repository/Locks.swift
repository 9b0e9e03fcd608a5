import Foundation
import Storage

/// Repository locks, as restic's (docs/format.md §14): a lock object under `locks/` (an envelope
/// of kind 4) says who holds it and since when. Backup, restore and check hold a shared lock;
/// forget, prune and key removal an exclusive one. A lock is refreshed (a new object written, the
/// old one removed) every `refreshInterval` while its holder works and removed when it ends.
/// One not refreshed for `staleAfter`, or whose process is gone on this host, is stale: it never
/// conflicts and `repo unlock` removes it.
public struct LockInfo: Codable, Sendable, Equatable {
    public var exclusive: Bool
    public var hostname: String
    public var pid: Int32
    public var username: String
    public var time: Date
    /// What the holder is doing (`backup`, `prune`…).
    public var operation: String?

    public init(exclusive: Bool, operation: String?, time: Date = Date()) {
        self.exclusive = exclusive
        self.hostname = ProcessInfo.processInfo.hostName
        self.pid = getpid()
        self.username = ProcessInfo.processInfo.environment["USER"] ?? String(getuid())
        self.time = time
        self.operation = operation
    }

    /// Not refreshed for `staleAfter`, or its process is gone on this host.
    public func isStale(now: Date = Date(), staleAfter: TimeInterval = RepositoryLock.staleAfter) -> Bool {
        if now.timeIntervalSince(time) > staleAfter { return true }
        if hostname == ProcessInfo.processInfo.hostName, kill(pid, 0) != 0, errno == ESRCH { return true }
        return false
    }

    /// "exclusive lock (prune) held by PID 1234 on host h by user u since 2m30s ago".
    public func describe(now: Date = Date()) -> String {
        "\(exclusive ? "an exclusive" : "a shared") lock\(operation.map { " (\($0))" } ?? "") held by PID \(pid) on host \(hostname) by user \(username), refreshed \(Self.age(now.timeIntervalSince(time))) ago"
    }

    static func age(_ seconds: TimeInterval) -> String {
        let s = max(0, Int(seconds))
        if s < 60 { return "\(s)s" }
        if s < 3600 { return "\(s / 60)m\(s % 60)s" }
        return "\(s / 3600)h\(s / 60 % 60)m"
    }
}

/// A lock this process holds; `release()` removes it (and stops refreshing it).
public final class RepositoryLock: Sendable {
    public static let staleAfter: TimeInterval = 30 * 60
    public static let refreshInterval: Duration = .seconds(5 * 60)

    let repository: Repository
    public let exclusive: Bool
    let operation: String?
    private let current: Locked<ObjectID?>
    private let refresher: Locked<Task<Void, Never>?> = Locked(nil)

    /// Every lock object this process has written and not yet removed, with its repository, so
    /// that SIGINT and SIGTERM can remove them before it ends. Registered as soon as the object is
    /// stored (`writeLock`), not when a `RepositoryLock` owns it: a signal while `lock()` still
    /// checks for conflicting locks, or while a refresh replaces the object, removes it too.
    static let written = Locked<[ObjectID: Repository]>([:])
    /// Dispatch sources are thread-safe once resumed; they are only kept alive here.
    private struct SignalSources: @unchecked Sendable { var sources: [any DispatchSourceSignal] = [] }
    private static let signalSources = Locked(SignalSources())

    /// Removes every lock object this process has written (only those in `repository`, if given).
    public static func releaseAll(in repository: Repository? = nil) async {
        for (id, repo) in written.value where repository.map({ $0 === repo }) ?? true {
            do { try await repo.removeLockObject(id) } catch {
                repo.logger.warning("cannot remove the repository lock \(id): \(error); `chebackup repo unlock` removes it once it is stale")
            }
        }
    }

    /// On SIGINT or SIGTERM: the locks this process holds are removed, then it exits with
    /// 128 + the signal, as the shell reports a process killed by it. Installed once.
    public static func releaseOnTermination() {
        signalSources.withLock { box in
            guard box.sources.isEmpty else { return }
            for sig in [SIGINT, SIGTERM] {
                signal(sig, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
                source.setEventHandler {
                    Task {
                        await RepositoryLock.releaseAll()
                        exit(128 + sig)
                    }
                }
                source.resume()
                box.sources.append(source)
            }
        }
    }

    init(repository: Repository, id: ObjectID, exclusive: Bool, operation: String?, refreshInterval: Duration) {
        self.repository = repository
        self.exclusive = exclusive
        self.operation = operation
        current = Locked(id)
        let task = Task { [weak self] in
            while !Task.isCancelled {
                do { try await Task.sleep(for: refreshInterval) } catch { return }
                await self?.refresh()
            }
        }
        refresher.withLock { $0 = task }
    }

    /// The lock object's name now (it changes at each refresh).
    public var id: ObjectID? { current.value }

    /// Writes a new lock object, then removes the old one: there is always one.
    func refresh() async {
        guard let old = current.value else { return }
        do {
            let new = try await repository.writeLock(LockInfo(exclusive: exclusive, operation: operation))
            let stillHeld = current.withLock { id -> Bool in
                guard id == old else { return false }
                id = new
                return true
            }
            if stillHeld {
                try await repository.removeLockObject(old)
            } else {
                try await repository.removeLockObject(new)  // released meanwhile
            }
        } catch {
            repository.logger.warning("cannot refresh the repository lock: \(error)")
        }
    }

    /// Removes the lock. Safe to call more than once.
    public func release() async {
        refresher.withLock { $0?.cancel(); $0 = nil }
        guard let id = current.withLock({ id -> ObjectID? in defer { id = nil }; return id }) else { return }
        do { try await repository.removeLockObject(id) } catch {
            repository.logger.warning("cannot remove the repository lock \(id): \(error); `chebackup repo unlock` removes it once it is stale")
        }
    }

    deinit { refresher.value?.cancel() }
}

extension Repository {
    func writeLock(_ info: LockInfo) async throws -> ObjectID {
        let id = try await saveEncrypted(.locks, kind: .lock, info)
        RepositoryLock.written.withLock { $0[id] = self }
        return id
    }

    func removeLockObject(_ id: ObjectID) async throws {
        do { try await storage.remove(Handle(.locks, id.hex)) } catch let error as StorageError where error.code == .notFound {}
        RepositoryLock.written.withLock { $0[id] = nil }
    }

    /// Every lock object: its info, or nil when it cannot be read (damaged, or another format).
    public func listLocks() async throws -> [(id: ObjectID, info: LockInfo?)] {
        var result: [(ObjectID, LockInfo?)] = []
        for file in try await storage.list(.locks) {
            guard let id = ObjectID(hex: file.name) else { continue }
            do {
                result.append((id, try await loadEncrypted(.locks, kind: .lock, id, as: LockInfo.self)))
            } catch let error as RepositoryError where error.code == .missing {
                continue  // removed while listing: released
            } catch let error as RepositoryError where error.code == .corrupted {
                result.append((id, nil))
            }
        }
        return result
    }

    /// Takes a lock: writes it, then looks for conflicting ones (any other live lock when
    /// exclusive, a live exclusive one when shared; an unreadable one conflicts with an
    /// exclusive lock). On a conflict the lock is removed again and, while `retry` lasts, tried
    /// again; then the error names the holder. After it is taken, the index is brought up to date
    /// (an index file gone since it was loaded, as a prune leaves, means reading it all again).
    public func lock(exclusive: Bool, operation: String, retry: Duration = .zero,
                     refreshInterval: Duration = RepositoryLock.refreshInterval) async throws -> RepositoryLock {
        let deadline = ContinuousClock.now + retry
        var wait: Duration = .milliseconds(500)
        while true {
            let own = try await writeLock(LockInfo(exclusive: exclusive, operation: operation))
            let conflict: String?
            do {
                conflict = try await conflictingLock(exclusive: exclusive, own: own)
            } catch {
                do { try await removeLockObject(own) } catch { logger.warning("cannot remove the lock \(own.short): \(error)") }
                throw error
            }
            guard let conflict else {
                let lock = RepositoryLock(repository: self, id: own, exclusive: exclusive, operation: operation, refreshInterval: refreshInterval)
                do { try await reloadIndexIfChanged() } catch {
                    await lock.release()
                    throw error
                }
                return lock
            }
            try await removeLockObject(own)
            guard ContinuousClock.now + wait <= deadline else {
                throw RepositoryError(.locked, "the repository at \(storage.location) is locked: \(conflict)\(retry > .zero ? " (waited \(retry))" : ""); `chebackup repo unlock` removes stale locks")
            }
            try await Task.sleep(for: wait)
            wait = min(wait * 2, .seconds(30))
        }
    }

    func conflictingLock(exclusive: Bool, own: ObjectID) async throws -> String? {
        let now = Date()
        for (id, info) in try await listLocks() where id != own {
            guard let info else {
                if exclusive { return "the lock \(id.short) cannot be read (damaged, or written by another version); if no other process uses the repository, remove it with `chebackup repo unlock --remove-all`" }
                continue
            }
            if info.isStale(now: now) { continue }
            if exclusive || info.exclusive { return info.describe(now: now) }
        }
        return nil
    }

    /// Removes stale locks (all locks with `all`); returns how many were removed.
    @discardableResult
    public func removeLocks(all: Bool) async throws -> Int {
        var removed = 0
        for (id, info) in try await listLocks() where all || info?.isStale() == true {
            try await removeLockObject(id)
            removed += 1
        }
        return removed
    }

    /// Runs `body` holding a lock, released afterwards (also when `body` throws).
    public func withLock<T: Sendable>(exclusive: Bool, operation: String, retry: Duration = .zero,
                                      _ body: (RepositoryLock) async throws -> T) async throws -> T {
        let lock = try await lock(exclusive: exclusive, operation: operation, retry: retry)
        do {
            let result = try await body(lock)
            await lock.release()
            return result
        } catch {
            await lock.release()
            throw error
        }
    }
}
