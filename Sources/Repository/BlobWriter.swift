import Foundation
import Storage

/// Turns new blobs into packs and uploads finished packs, at most `connections` at a time.
/// Memory stays bounded: one open pack per blob type, plus the packs being uploaded; a caller
/// that finishes a pack while all upload slots are busy waits (backpressure).
public final class BlobWriter: Sendable {
    let repo: Repository
    private let open = Locked<[BlobType: PackBuilder]>([:])
    private let slots: AsyncSemaphore
    private let uploads = Locked<[Task<Void, Never>]>([])
    private let failure = Locked<(any Error & Sendable)?>(nil)
    private let stored = Locked<StoredTotals>(StoredTotals())

    public init(repository: Repository, connections: Int) {
        repo = repository
        slots = AsyncSemaphore(permits: max(1, connections))
    }

    public var packsStored: Int { stored.value.packs }
    public var bytesStored: Int64 { stored.value.bytes }

    /// Stores `plaintext` as blob `id` if no one else has or is storing it. Returns whether it was new.
    @discardableResult
    public func save(_ plaintext: Data, id: BlobID, type: BlobType) async throws -> Bool {
        guard repo.index.claim(id) else { return false }
        try await store(plaintext, id: id, type: type)
        return true
    }

    /// Stores a blob the caller has claimed with `repo.index.claim`.
    func store(_ plaintext: Data, id: BlobID, type: BlobType) async throws {
        if let error = failure.withLock({ $0 }) { throw error }
        let sealed = PackFormat.sealBlob(plaintext, id: id, type: type, key: repo.keys.encryption)
        let limit = repo.config.packSize
        let capacity = limit + repo.config.chunker.maxSize + 4096
        let full = open.withLock { packs -> PackBuilder? in
            // Mutate in place: copying a builder would copy the whole pack being built.
            packs[type, default: PackBuilder(capacity: capacity)].add(sealed: sealed, id: id, type: type, rawLength: plaintext.count)
            return packs[type]!.count >= limit ? packs.removeValue(forKey: type) : nil
        }
        if let full { try await upload(full) }
    }

    private func upload(_ builder: PackBuilder) async throws {
        await slots.acquire()
        if let error = failure.withLock({ $0 }) {
            slots.release()
            throw error
        }
        let task = Task { [repo, slots, failure, stored] in
            defer { slots.release() }
            do {
                var builder = builder
                let bytes = builder.finish(key: repo.keys.encryption)
                let id = try await repo.saveObject(.data, bytes)
                repo.index.addStored(IndexFile.Pack(id: id, size: Int64(bytes.count), entries: builder.entries))
                stored.withLock {
                    $0.packs += 1
                    $0.bytes += Int64(bytes.count)
                }
            } catch {
                failure.withLock { if $0 == nil { $0 = error as any Error & Sendable } }
            }
        }
        uploads.withLock { $0.append(task) }
    }

    /// Uploads the partly filled packs, waits for every upload, then writes the index for them.
    /// After this returns, every blob saved so far is stored and indexed.
    public func flush() async throws {
        let partial = open.withLock { packs -> [PackBuilder] in
            defer { packs = [:] }
            return packs.values.filter { !$0.isEmpty }
        }
        for builder in partial { try await upload(builder) }
        while true {
            let pending = uploads.withLock { tasks -> [Task<Void, Never>] in
                defer { tasks = [] }
                return tasks
            }
            if pending.isEmpty { break }
            for task in pending { await task.value }
        }
        if let error = failure.withLock({ $0 }) { throw error }
        try await repo.flushIndex()
    }

    /// Waits for uploads in flight without writing anything new (used when a backup fails), then
    /// indexes what did get stored, so a later backup reuses it.
    public func salvage() async {
        let pending = uploads.withLock { tasks -> [Task<Void, Never>] in
            defer { tasks = [] }
            return tasks
        }
        for task in pending { await task.value }
        open.withLock { $0 = [:] }
        repo.index.abandonPending()
        do { try await repo.flushIndex() } catch {
            repo.logger.warning("could not write the index of packs stored before the failure: \(error)")
        }
    }
}

struct StoredTotals: Sendable {
    var packs = 0
    var bytes: Int64 = 0
}
