import Foundation
import Storage
import Synchronization

/// Tree blobs kept in memory after one bulk load: restore and check walk every directory, and
/// fetching each tree with its own range request costs a round trip per directory (hundreds of
/// requests for a Che workspace tree). Tree blobs live in packs of their own, so loading those
/// packs whole brings every tree in a few requests.
final class TreeCache: Sendable {
    private let trees = Mutex<[BlobID: Data]>([:])
    private let loaded = Mutex(false)

    func get(_ id: BlobID) -> Data? { trees.withLock { $0[id] } }

    fileprivate func put(_ entries: [(BlobID, Data)]) {
        trees.withLock { for (id, data) in entries { $0[id] = data } }
    }

    fileprivate func markLoaded() -> Bool {
        loaded.withLock { was in
            defer { was = true }
            return !was
        }
    }
}

extension Repository {
    /// Loads a whole pack (as long as the index says) and checks that its bytes hash to its name.
    func loadWholePack(_ pack: PackID) async throws -> Data {
        guard let size = index.packSize(pack) else {
            throw RepositoryError(.missing, "pack \(pack) is not in the index")
        }
        let data = try await loadPackRange(pack, 0..<size)
        guard ObjectID(hashing: data) == pack else {
            throw RepositoryError(.corrupted, "pack \(pack) is corrupted: its content does not match its name")
        }
        return data
    }

    /// Loads every tree blob into memory with one request per tree pack, several at a time,
    /// when the tree packs add up to at most `limit` bytes. Later `loadTree` calls are served
    /// from memory; without the preload they still work, one request each. Each pack is read
    /// whole and checked against its name (format §2), so damage anywhere in it, also in its
    /// header or trailer or a truncation, fails the preload as corruption naming the pack.
    public func preloadTrees(connections: Int = 4, limit: Int64 = 256 << 20) async throws {
        guard treeCache.markLoaded() else { return }
        let byPack = Dictionary(grouping: index.allLocations().filter { $0.blob.type == .tree }, by: \.pack)
        let total = byPack.keys.reduce(Int64(0)) { $0 + (index.packSize($1) ?? 0) }
        guard total <= limit, !byPack.isEmpty else { return }
        let work = Array(byPack)
        try await withThrowingTaskGroup(of: [(BlobID, Data)].self) { group in
            var next = 0
            func launch() {
                guard next < work.count else { return }
                let (pack, blobs) = work[next]
                next += 1
                group.addTask {
                    let data = try await self.loadWholePack(pack)
                    return try data.withUnsafeBytes { raw in
                        try blobs.map { location in
                            let start = Int(location.blob.offset)
                            let plain = try self.openBlob(UnsafeRawBufferPointer(rebasing: raw[start..<(start + Int(location.blob.length))]), location)
                            return (location.blob.id, plain)
                        }
                    }
                }
            }
            for _ in 0..<max(1, connections) { launch() }
            while let entries = try await group.next() {
                treeCache.put(entries)
                launch()
            }
        }
    }
}
