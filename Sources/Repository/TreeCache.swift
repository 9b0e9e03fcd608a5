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

    /// A tree pack in memory: its bytes as stored (read whole and checked; tree blobs stay
    /// compressed and encrypted, a few times smaller than their JSON, and are opened and checked
    /// when read) and which of its trees a walk has taken. No per-tree copy or map is kept: the
    /// index says where a tree is, so a directory costs 4 bytes and a bit here, not a heap
    /// object and a map entry (a tree of 50,000 one-file directories took 31 MiB that way).
    private struct Pack {
        let data: Data
        /// The offsets of the pack's tree blobs, ascending: a tree's position in `taken`.
        let offsets: [UInt32]
        var taken: [UInt64]
        var left: Int

        func position(of blob: PackedBlob) -> Int? {
            var low = 0, high = offsets.count
            while low < high {
                let mid = (low + high) / 2
                if offsets[mid] < blob.offset { low = mid + 1 } else { high = mid }
            }
            return low < offsets.count && offsets[low] == blob.offset ? low : nil
        }

        func isTaken(_ i: Int) -> Bool { taken[i >> 6] & (1 << UInt64(i & 63)) != 0 }
    }

    private let packs = Mutex<[PackID: Pack]>([:])
    private struct Loads {
        /// Every pack load started, under way or done: a pack is loaded once, and a walk that
        /// needs a pack another walk is loading waits for that load.
        var tasks: [PackID: Task<Void, any Error>] = [:]
        var bytes: Int64 = 0
        var all = false
    }
    private let loads = Mutex(Loads())

    /// The stored bytes of the tree blob at `location` when its pack is in memory and no walk
    /// took it. With `take` it is marked taken (a walk that reads every tree once: restore, a
    /// backup's parent trees), and a pack whose trees were all taken is dropped, so memory is
    /// given back as the walk goes.
    func sealed(at location: BlobLocation, take: Bool) -> Data? {
        guard location.blob.type == .tree else { return nil }
        return packs.withLock { packs -> Data? in
            // The lookup's copy of the entry ends before the entry is changed in place (no copy
            // of its bitmap for every tree taken).
            let found: (i: Int, bytes: Data, last: Bool)? = {
                guard let pack = packs[location.pack], let i = pack.position(of: location.blob), !pack.isTaken(i) else { return nil }
                let start = pack.data.startIndex + Int(location.blob.offset), end = start + Int(location.blob.length)
                guard end <= pack.data.endIndex else { return nil }
                return (i, pack.data[start..<end], pack.left == 1)
            }()
            guard let found else { return nil }
            if take {
                if found.last {
                    packs[location.pack] = nil
                } else {
                    packs[location.pack]!.taken[found.i >> 6] |= 1 << UInt64(found.i & 63)
                    packs[location.pack]!.left -= 1
                }
            }
            return found.bytes
        }
    }

    /// How many tree packs are in memory (tests).
    var packsHeld: Int { packs.withLock { $0.count } }

    /// Whether the tree blob at `location` is in memory and not taken.
    func contains(_ location: BlobLocation) -> Bool {
        packs.withLock { packs in
            guard let pack = packs[location.pack], let i = pack.position(of: location.blob) else { return false }
            return !pack.isTaken(i)
        }
    }

    /// Keeps `data`, the whole of tree pack `pack`, whose header lists `entries`.
    func put(_ pack: PackID, data: Data, entries: [PackedBlob]) {
        let offsets = entries.filter { $0.type == .tree }.map(\.offset).sorted()
        guard !offsets.isEmpty else { return }
        let kept = Pack(data: data, offsets: offsets, taken: [UInt64](repeating: 0, count: (offsets.count + 63) / 64),
                        left: offsets.count)
        packs.withLock { $0[pack] = kept }
    }

    /// Forgets every cached tree and pack load (after a backup: the trees of its parent's packs
    /// that it did not read are not kept for the life of the repository object).
    /// Loads under way are not cancelled (another walk may wait for them); what they bring in
    /// later is kept.
    func reset() {
        loads.withLock { $0 = Loads() }
        packs.withLock { $0.removeAll() }
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
        let packs = Set(ids.compactMap { index.lookup($0) }.filter { !treeCache.contains($0) }.map(\.pack))
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
        treeCache.put(pack, data: data, entries: entries)
    }

    /// A cached tree's plaintext (taken out of the cache with `take`), or nil when it is not cached.
    func cachedTree(_ id: BlobID, take: Bool) throws -> Data? {
        guard let location = index.lookup(id), let sealed = treeCache.sealed(at: location, take: take) else { return nil }
        return try sealed.withUnsafeBytes { try openBlob($0, location) }
    }

    /// A tree that a walk reads once (restore, a backup's parent trees): when it is not in memory,
    /// its whole pack is loaded (one request brings the trees of many directories, which the
    /// walk will ask for next), then the tree is taken out of the cache.
    func walkTree(_ id: BlobID) async throws -> Tree {
        if let location = index.lookup(id), !treeCache.contains(location) { try await loadTreePacks(holding: [id], connections: 1) }
        return try await takeTree(id)
    }
}
