import Foundation
import Storage

/// Repairs of damaged metadata (`chebackup repo repair`): the data packs are the truth, index
/// and snapshot files are rebuilt from them or dropped.
extension Repository {
    public struct IndexRepair: Sendable {
        /// Packs whose header was read and indexed.
        public var packs = 0
        public var blobs = 0
        /// Index files replaced (all of those there were, damaged or not).
        public var replacedIndexFiles = 0
        /// Packs whose header could not be read, with why: their data is lost to the index.
        public var unreadablePacks: [String] = []
    }

    /// Rebuilds the index from the pack headers: every pack's header is read (it lists the
    /// pack's blobs, encrypted), new index files are written for all readable packs, and only
    /// then are the old index files removed, so a crash midway leaves a readable index behind.
    public func repairIndex(connections: Int = 4) async throws -> IndexRepair {
        var result = IndexRepair()
        let oldIndexFiles = try await storage.list(.index).compactMap { ObjectID(hex: $0.name) }
        let packs = try await storage.list(.data).compactMap { info in ObjectID(hex: info.name).map { ($0, info.size) } }
        var rebuilt: [IndexFile.Pack] = []
        try await withThrowingTaskGroup(of: (IndexFile.Pack?, String?).self) { group in
            var next = packs.makeIterator()
            func launch() {
                guard let (id, size) = next.next() else { return }
                group.addTask {
                    do {
                        return (IndexFile.Pack(id: id, size: size, entries: try await self.readPackHeader(id, size: size)), nil)
                    } catch let error as RepositoryError {
                        return (nil, "pack \(id): \(error.message)")
                    }
                }
            }
            for _ in 0..<max(1, connections) { launch() }
            while let (pack, problem) = try await group.next() {
                if let pack { rebuilt.append(pack) }
                if let problem { result.unreadablePacks.append(problem) }
                launch()
            }
        }
        for pack in rebuilt {
            index.addStored(pack)
            result.packs += 1
            result.blobs += pack.blobs.count
        }
        try await flushIndex()
        for id in oldIndexFiles {
            try await storage.remove(Handle(.index, id.hex))
            loadedIndexFiles.withLock { _ = $0.remove(id) }
            result.replacedIndexFiles += 1
        }
        damaged.withLock { d in d = d.filter { !$0.key.hasPrefix("index/") } }
        return result
    }

    /// Removes every snapshot file that cannot be read (damaged or truncated); returns their ids.
    /// The data they referred to stays (another snapshot may share it).
    public func repairSnapshots() async throws -> [SnapshotID] {
        var removed: [SnapshotID] = []
        for id in try await storage.list(.snapshots).compactMap({ ObjectID(hex: $0.name) }) {
            do { _ = try await loadSnapshot(id) } catch let error as RepositoryError where error.code == .corrupted {
                logger.notice("removing snapshot \(id): \(error.message)")
                try await storage.remove(Handle(.snapshots, id.hex))
                removed.append(id)
            }
        }
        damaged.withLock { d in d = d.filter { !$0.key.hasPrefix("snapshots/") } }
        return removed
    }
}
