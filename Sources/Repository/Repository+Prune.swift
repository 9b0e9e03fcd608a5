import Foundation
import Storage

/// Forget and prune (docs/format.md, "Forget and prune"). Forget deletes snapshot files only.
/// Prune, under an exclusive lock the caller holds, deletes the packs no snapshot needs and
/// repacks partly used ones, in an order that leaves a valid repository wherever it stops:
/// new packs, then index files that supersede all old ones, then the old index files, then the
/// packs; a deleted pack is never listed by an index file that remains.
extension Repository {
    /// Removes the snapshot files (their data stays until a prune).
    public func forget(_ ids: [SnapshotID]) async throws {
        for id in ids {
            do { try await storage.remove(Handle(.snapshots, id.hex)) } catch let error as StorageError where error.code == .notFound {
                throw RepositoryError(.snapshotNotFound, "no snapshot \(id.short) in \(storage.location)")
            }
        }
    }

    public struct PruneOptions: Sendable {
        /// Unused space tolerated after the prune, as a percentage of the used space (restic's
        /// `--max-unused`); partly used packs with the most unused space are repacked first.
        /// nil: unlimited (only packs with nothing used are deleted).
        public var maxUnusedPercent: Double? = 5
        public var dryRun = false
        public var connections = 4
        public init() {}
    }

    public struct PruneReport: Sendable, Equatable {
        public var packsBefore = 0
        public var bytesBefore: Int64 = 0
        public var usedBlobs = 0
        public var usedBytes: Int64 = 0
        public var packsDeleted = 0
        public var packsRepacked = 0
        public var packsWritten = 0
        public var unindexedPacksDeleted = 0
        public var indexFilesReplaced = 0
        public var packsAfter = 0
        public var bytesAfter: Int64 = 0
    }

    /// Every blob some snapshot needs: trees reachable from each part's root, chunk lists and
    /// chunks. A snapshot that cannot be read, or a tree that is missing, stops the prune: data
    /// only it would show as used must not be deleted.
    func usedBlobs(connections: Int) async throws -> Set<BlobID> {
        let names = try await storage.list(.snapshots).compactMap { ObjectID(hex: $0.name) }
        do { try await preloadTrees(connections: connections) } catch let error as RepositoryError {
            logger.warning("\(error.message); reading trees one by one")
        }
        var used = Set<BlobID>()
        var seenTrees = Set<BlobID>()
        for id in names {
            let snapshot: Snapshot
            do { snapshot = try await loadSnapshot(id) } catch let error as RepositoryError {
                throw RepositoryError(error.code, "prune stopped, nothing was deleted: \(error.message); the data only it shows as used would be lost (`repo repair snapshots` removes damaged snapshots)")
            }
            var pending = [snapshot.parts.map(\.root)].flatMap { $0 }
            while let node = pending.popLast() {
                if let list = node.contentList {
                    used.insert(list)
                    used.formUnion(try await chunks(of: node))
                } else {
                    used.formUnion(node.content ?? [])
                }
                guard node.type == .dir, let subtree = node.subtree, seenTrees.insert(subtree).inserted else { continue }
                used.insert(subtree)
                do { pending += try await loadTree(subtree).nodes } catch let error as RepositoryError {
                    throw RepositoryError(error.code, "prune stopped, nothing was deleted: snapshot \(id.short) needs tree \(subtree.short): \(error.message) (run `repo check`)")
                }
            }
        }
        for blob in used where !index.has(blob) {
            throw RepositoryError(.missing, "prune stopped, nothing was deleted: blob \(blob.short), which a snapshot needs, is in no index (run `repo check`, `repo repair index`)")
        }
        return used
    }

    /// Prunes. The caller holds an exclusive lock (so no backup writes meanwhile and every
    /// unindexed pack is garbage).
    public func prune(_ options: PruneOptions = .init()) async throws -> PruneReport {
        var report = PruneReport()
        try await reloadIndexIfChanged()
        let oldIndexFiles = loadedIndexFiles.value
        let stored = Dictionary(try await storage.list(.data).compactMap { info in ObjectID(hex: info.name).map { ($0, info.size) } },
                                uniquingKeysWith: { a, _ in a })
        report.packsBefore = stored.count
        report.bytesBefore = stored.values.reduce(0, +)
        let used = try await usedBlobs(connections: options.connections)

        // Each indexed pack: its blobs, and how much of it is used.
        var blobsOf: [PackID: [PackedBlob]] = [:]
        for location in index.allLocations() { blobsOf[location.pack, default: []].append(location.blob) }
        let sizes = index.packs
        var usedBytes: [PackID: Int64] = [:], unusedBytes: [PackID: Int64] = [:]
        for (pack, blobs) in blobsOf {
            for blob in blobs {
                if used.contains(blob.id) { usedBytes[pack, default: 0] += Int64(blob.length) } else { unusedBytes[pack, default: 0] += Int64(blob.length) }
            }
        }
        report.usedBlobs = used.count
        report.usedBytes = usedBytes.values.reduce(0, +)
        let empty = sizes.keys.filter { (usedBytes[$0] ?? 0) == 0 }
        // Partly used packs, most unused space first, repacked while the rest leaves more unused
        // space than tolerated.
        var partly = sizes.keys.filter { (usedBytes[$0] ?? 0) > 0 && (unusedBytes[$0] ?? 0) > 0 }
            .sorted { (unusedBytes[$0]!, $0.hex) > (unusedBytes[$1]!, $1.hex) }
        var unused = partly.reduce(Int64(0)) { $0 + unusedBytes[$1]! }
        var repack: [PackID] = []
        if let percent = options.maxUnusedPercent {
            let tolerated = Int64(Double(report.usedBytes) * percent / 100)
            while unused > tolerated, let pack = partly.first {
                partly.removeFirst()
                repack.append(pack)
                unused -= unusedBytes[pack]!
            }
        }
        let unindexed = stored.keys.filter { sizes[$0] == nil }
        report.packsDeleted = empty.count
        report.packsRepacked = repack.count
        report.unindexedPacksDeleted = unindexed.count
        let removed = Set(empty).union(repack)
        if options.dryRun {
            report.packsAfter = stored.count - removed.count - unindexed.count + (repack.isEmpty ? 0 : 1)
            report.bytesAfter = stored.filter { !removed.contains($0.key) && sizes[$0.key] != nil }.values.reduce(0, +)
                + repack.reduce(Int64(0)) { $0 + usedBytes[$1]! }
            return report
        }
        guard !removed.isEmpty || !unindexed.isEmpty else {
            report.packsAfter = stored.count
            report.bytesAfter = report.bytesBefore
            return report
        }
        try await checkDeletesAllowed()

        // 1. The used blobs of the packs to repack, copied sealed into new packs.
        let newPacks = try await copyUsedBlobs(of: repack, blobsOf: blobsOf, used: used, connections: options.connections)
        report.packsWritten = newPacks.count
        // 2. Index files for every pack that stays, superseding all old ones.
        var keep: [IndexFile.Pack] = []
        for (pack, size) in sizes where !removed.contains(pack) {
            keep.append(IndexFile.Pack(id: pack, size: size, entries: blobsOf[pack] ?? []))
        }
        keep += newPacks
        var written: [ObjectID] = []
        var remaining = keep.sorted { $0.id.hex < $1.id.hex }
        while !remaining.isEmpty {
            let count = IndexFile.fileLength(of: remaining, limit: Self.blobsPerIndexFile).packs
            var file = IndexFile(packs: Array(remaining.prefix(count)))
            file.supersedes = oldIndexFiles.sorted { $0.hex < $1.hex }
            written.append(try await saveEncrypted(.index, kind: .index, file))
            remaining.removeFirst(count)
        }
        // 3. The old index files; 4. then the packs they alone listed, and unindexed ones.
        for id in oldIndexFiles where !written.contains(id) {
            try await storage.remove(Handle(.index, id.hex))
            report.indexFilesReplaced += 1
        }
        for pack in removed.union(unindexed) {
            do { try await storage.remove(Handle(.data, pack.hex)) } catch let error as StorageError where error.code == .notFound {}
        }
        // The index in memory is what is stored now.
        index.resetIndexed()
        loadedIndexFiles.withLock { $0.removeAll() }
        try await loadIndex()
        let after = try await storage.list(.data)
        report.packsAfter = after.count
        report.bytesAfter = after.reduce(0) { $0 + $1.size }
        return report
    }

    /// A server that refuses deletes (append-only) is found out before anything is written: a
    /// delete of a name that cannot exist must say "not found", not "forbidden".
    func checkDeletesAllowed() async throws {
        let probe = Handle(.data, String(repeating: "0", count: 64))
        do { try await storage.remove(probe) } catch let error as StorageError where error.code == .notFound {
        } catch let error as StorageError {
            throw RepositoryError(.unsupported, "prune stopped, nothing was changed: \(storage.location) refuses deletes (an append-only server?): \(error.message)")
        }
    }

    /// Copies the used blobs of `packs` into new packs, sealed as they are (a blob's seal does not
    /// depend on its pack); returns the new packs, stored but not yet indexed.
    func copyUsedBlobs(of packs: [PackID], blobsOf: [PackID: [PackedBlob]], used: Set<BlobID>, connections: Int) async throws -> [IndexFile.Pack] {
        var result: [IndexFile.Pack] = []
        var copied = Set<BlobID>()
        var builder: PackBuilder?
        func finish() async throws {
            guard let current = builder, !current.isEmpty else { return }
            let (file, id) = try await current.finish(key: keys.encryption)
            let size = try await saveStagedObject(.data, file, as: id)
            result.append(IndexFile.Pack(id: id, size: size, entries: current.entries))
            builder = nil
        }
        for pack in packs {
            let data = try await loadWholePack(pack)
            for blob in (blobsOf[pack] ?? []).sorted(by: { $0.offset < $1.offset }) where used.contains(blob.id) && copied.insert(blob.id).inserted {
                let start = Int(blob.offset), end = start + Int(blob.length)
                guard end <= data.count else {
                    throw RepositoryError(.corrupted, "prune stopped: pack \(pack) is shorter than its index says (blob \(blob.id.short)); run `repo check --read-data`")
                }
                let sealed = data.subdata(in: start..<end)
                // Checked before it is copied: a damaged blob must not be spread.
                try sealed.withUnsafeBytes { raw in
                    try PackFormat.withOpenedBlob(raw, entry: blob, keys: keys, pack: pack) { _ in }
                }
                if builder == nil { builder = try PackBuilder(file: storage.makeStagingFile(for: .data), version: packVersion) }
                try builder!.add(sealed: sealed, id: blob.id, type: blob.type, rawLength: Int(blob.rawLength))
                if builder!.count >= config.packSize { try await finish() }
            }
        }
        try await finish()
        return result
    }
}
