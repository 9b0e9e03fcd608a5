import Foundation
import Storage
import Synchronization

/// Tree blobs kept in memory after their packs were loaded: restore and check walk every
/// directory, and fetching each tree with its own range request costs a round trip per
/// directory (hundreds of requests for a Che workspace tree). Tree blobs live in packs of their
/// own, so loading those packs whole brings many trees in one request. Only the packs a walk
/// needs are loaded (restore), or all of them (check), up to `limit` bytes of packs per
/// repository; trees beyond it are read one by one.
final class TreeCache: Sendable {
    /// Bytes of tree packs one repository loads into memory at most.
    static let limit: Int64 = 256 << 20

    /// A cached tree blob as stored (compressed and encrypted, a few times smaller than its
    /// JSON): it is opened, and its id checked, when it is read.
    struct Sealed: Sendable {
        let bytes: Data
        let location: BlobLocation
    }

    private let trees = Mutex<[BlobID: Sealed]>([:])
    private struct Loads {
        /// Every pack load started, under way or done: a pack is loaded once, and a walk that
        /// needs a pack another walk is loading waits for that load.
        var tasks: [PackID: Task<Void, any Error>] = [:]
        var bytes: Int64 = 0
        var all = false
    }
    private let loads = Mutex(Loads())

    func get(_ id: BlobID) -> Sealed? { trees.withLock { $0[id] } }

    /// Removes and returns a tree blob: a walk that reads every tree once (restore, a backup's
    /// parent trees) takes them, so memory is given back as the walk goes.
    func take(_ id: BlobID) -> Sealed? { trees.withLock { $0.removeValue(forKey: id) } }

    func contains(_ id: BlobID) -> Bool { trees.withLock { $0[id] != nil } }

    fileprivate func put(_ entries: [(BlobID, Sealed)]) {
        trees.withLock { for (id, sealed) in entries { $0[id] = sealed } }
    }

    /// Forgets every cached tree and pack load (after a backup: the trees of its parent's packs
    /// that it did not read are not kept for the life of the repository object).
    /// Loads under way are not cancelled (another walk may wait for them); what they bring in
    /// later is kept.
    func reset() {
        loads.withLock { $0 = Loads() }
        trees.withLock { $0.removeAll() }
    }

    /// The loads of `packs` (with their sizes): those already started are shared; new ones are
    /// started with `start` while the packs loaded add up to at most `limit` bytes. A pack past
    /// the limit gets no load.
    fileprivate func loads(of packs: [(PackID, Int64)], limit: Int64,
                           start: (PackID) -> Task<Void, any Error>) -> [Task<Void, any Error>] {
        loads.withLock { state in
            packs.compactMap { pack, size in
                if let task = state.tasks[pack] { return task }
                guard state.bytes + size <= limit else { return nil }
                state.bytes += size
                let task = start(pack)
                state.tasks[pack] = task
                return task
            }
        }
    }

    /// True the first time it is called.
    fileprivate func claimAll() -> Bool {
        loads.withLock { state in
            defer { state.all = true }
            return !state.all
        }
    }
}

extension Repository {
    /// Loads a whole pack (as long as the index says) and checks it against its name.
    func loadWholePack(_ pack: PackID) async throws -> Data {
        try await loadWholePackAndHeader(pack).data
    }

    /// `loadWholePack`, also giving the entries of its (checked) header.
    func loadWholePackAndHeader(_ pack: PackID) async throws -> (data: Data, entries: [PackedBlob]) {
        guard let size = index.packSize(pack) else {
            throw RepositoryError(.missing, "pack \(pack) is not in the index")
        }
        let data = try await loadPackRange(pack, 0..<size)
        return (data, try PackFormat.verifyWhole(data, pack: pack, key: keys.encryption))
    }

    /// Loads every tree pack of the repository (what check, which walks every snapshot, needs),
    /// several at a time, when they add up to at most `limit` bytes. Later `loadTree` calls are
    /// served from memory; without the preload they still work, one request each. Each pack is
    /// read whole and checked against its name (format §2), so damage anywhere in it, also in
    /// its header or trailer or a truncation, fails the preload as corruption naming the pack.
    public func preloadTrees(connections: Int = 4, limit: Int64 = 256 << 20) async throws {
        guard treeCache.claimAll() else { return }
        let packs = Set(index.allLocations().filter { $0.blob.type == .tree }.map(\.pack)).map { ($0, index.packSize($0) ?? 0) }
        guard packs.reduce(0, { $0 + $1.1 }) <= limit else { return }
        try await loadTreePacks(packs, connections: connections, limit: limit)
    }

    /// Loads the packs holding `ids` (trees not in memory yet) whole, checked, and keeps every
    /// tree blob of them in memory.
    func loadTreePacks(holding ids: [BlobID], connections: Int, limit: Int64 = TreeCache.limit) async throws {
        let packs = Set(ids.filter { !treeCache.contains($0) }.compactMap { index.lookup($0)?.pack })
        try await loadTreePacks(packs.map { ($0, index.packSize($0) ?? 0) }, connections: connections, limit: limit)
    }

    private func loadTreePacks(_ packs: [(PackID, Int64)], connections: Int, limit: Int64) async throws {
        guard !packs.isEmpty else { return }
        let slots = AsyncSemaphore(permits: max(1, connections))
        let tasks = treeCache.loads(of: packs, limit: limit) { pack in
            Task { try await slots.withPermit { try await self.cacheTreePack(pack) } }
        }
        for task in tasks { try await task.value }
    }

    /// Keeps every tree blob of `pack` (read whole and checked) in memory, as stored; the pack's
    /// own header says where they are, so no scan of the index is needed.
    private func cacheTreePack(_ pack: PackID) async throws {
        let (data, entries) = try await loadWholePackAndHeader(pack)
        let trees = entries.filter { $0.type == .tree }.map { entry in
            let start = Int(entry.offset)
            return (entry.id, TreeCache.Sealed(bytes: Data(data[start..<(start + Int(entry.length))]),
                                               location: BlobLocation(pack: pack, blob: entry)))
        }
        treeCache.put(trees)
    }

    /// A cached tree's plaintext (taken out of the cache with `take`), or nil when it is not cached.
    func cachedTree(_ id: BlobID, take: Bool) throws -> Data? {
        guard let sealed = take ? treeCache.take(id) : treeCache.get(id) else { return nil }
        return try sealed.bytes.withUnsafeBytes { try openBlob($0, sealed.location) }
    }

    /// A tree that a walk reads once (restore, a backup's parent trees): when it is not in memory,
    /// its whole pack is loaded (one request brings the trees of many directories, which the
    /// walk will ask for next), then the tree is taken out of the cache.
    func walkTree(_ id: BlobID) async throws -> Tree {
        if !treeCache.contains(id) { try await loadTreePacks(holding: [id], connections: 1) }
        return try await takeTree(id)
    }
}
