import Foundation
import Storage

public struct StoredParts: Sendable {
    public let parts: [Part]
    /// The snapshot whose unchanged files were taken over, if any.
    public let parent: SnapshotID?
    public let packsStored: Int
    public let bytesStored: Int64
}

public struct BackupResult: Sendable {
    public let id: SnapshotID
    public let snapshot: Snapshot
    public let packsStored: Int
    public let bytesStored: Int64
}

extension Repository {
    /// Backs up `sources` into one new snapshot. Order of writes: packs, index, snapshot; on any
    /// failure no snapshot is written, and the packs already stored are indexed for reuse.
    public func backup(_ sources: [BackupSource], options: BackupOptions = .init(),
                       progress: ProgressCounters = ProgressCounters()) async throws -> BackupResult {
        let stored = try await storeParts(sources, options: options, progress: progress)
        let (id, snapshot) = try await commitSnapshot(parts: stored.parts, options: options, parent: stored.parent,
                                                      reloadIndex: false)
        return BackupResult(id: id, snapshot: snapshot, packsStored: stored.packsStored, bytesStored: stored.bytesStored)
    }

    /// Stores the parts' data and index (no snapshot): what an agent does for its share of a
    /// backup. When it returns, everything the parts refer to is stored and indexed.
    public func storeParts(_ sources: [BackupSource], options: BackupOptions = .init(),
                           progress: ProgressCounters = ProgressCounters()) async throws -> StoredParts {
        guard !sources.isEmpty else { throw RepositoryError(.invalidArgument, "nothing to back up") }
        let names = sources.map(\.name)
        if let dup = names.first(where: { name in names.filter { $0 == name }.count > 1 }) {
            throw RepositoryError(.invalidArgument, "two parts are named \"\(dup)\": part names must be unique")
        }
        let recovered = try await indexUnindexedPacks()
        if recovered > 0 { logger.info("indexed \(recovered) packs left by an interrupted backup") }

        let parents = try await findParents(names: names, options: options)
        defer { treeCache.reset() }  // the parent trees' packs were loaded for this backup only
        let writer = BlobWriter(repository: self, connections: options.connections)
        let archiver = Archiver(repository: self, writer: writer, progress: progress,
                                fileConcurrency: options.fileConcurrency)
        do {
            let parts = try await withThrowingTaskGroup(of: (Int, Part).self) { group in
                var results = [Part?](repeating: nil, count: sources.count)
                var next = 0
                func launch() {
                    guard next < sources.count else { return }
                    let (index, source) = (next, sources[next])
                    next += 1
                    group.addTask { (index, try await self.store(source, archiver: archiver, parent: parents.parts[source.name])) }
                }
                for _ in 0..<max(1, options.partConcurrency) { launch() }
                while let (index, part) = try await group.next() {
                    results[index] = part
                    launch()
                }
                return results.compactMap { $0 }
            }
            try await writer.flush()
            return StoredParts(parts: parts, parent: parents.snapshot, packsStored: writer.packsStored, bytesStored: writer.bytesStored)
        } catch {
            await writer.salvage()
            throw error
        }
    }

    private func store(_ source: BackupSource, archiver: Archiver, parent: Part?) async throws -> Part {
        switch source {
        case .path(let path, let name):
            return try await archiver.backupTree(path: path, name: name, parent: parent)
        case .stream(let fd, let name):
            return try await archiver.backupStream(fd: fd, name: name)
        case .producer(let name, let start):
            let producer = try start()
            do {
                let part = try await archiver.backupStream(fd: producer.fd, name: name)
                try await producer.finish()
                return part
            } catch {
                producer.abort()
                throw error
            }
        }
    }

    /// Writes the snapshot for parts stored by `storeParts` (here or by agents): reloads the
    /// index and checks that every part's root is stored, so a snapshot never refers to data
    /// that is not there.
    public func commitSnapshot(parts: [Part], options: BackupOptions = .init(), parent: SnapshotID? = nil,
                               reloadIndex: Bool = true) async throws -> (SnapshotID, Snapshot) {
        guard !parts.isEmpty else { throw RepositoryError(.invalidArgument, "a snapshot needs at least one part") }
        if reloadIndex { try await loadIndex() }
        for part in parts {
            let needed = (part.root.subtree.map { [$0] } ?? []) + (part.root.contentList.map { [$0] } ?? []) + (part.root.content ?? [])
            if let missing = needed.first(where: { !index.has($0) }) {
                throw RepositoryError(.missing, "part \(part.name) refers to blob \(missing), which is not stored: no snapshot written")
            }
        }
        let snapshot = Snapshot(time: Date(), hostname: options.hostname,
                                username: ProcessInfo.processInfo.environment["USER"] ?? "",
                                tags: options.tags, parent: parent, program: programVersion,
                                parts: parts, metadata: options.metadata)
        return (try await saveSnapshot(snapshot), snapshot)
    }

    /// The snapshot metadata key naming the installation a snapshot was taken of.
    public static let installationKey = "installationId"

    /// For each part name, the part of the newest snapshot that has it (see `BackupOptions.parent`).
    private func findParents(names: [String], options: BackupOptions) async throws
        -> (snapshot: SnapshotID?, parts: [String: Part]) {
        if options.force { return (nil, [:]) }
        if let id = options.parent {
            let snapshot = try await loadSnapshot(id)
            return (id, Dictionary(snapshot.parts.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a }))
        }
        var parts: [String: Part] = [:]
        var chosen: SnapshotID?
        for (id, snapshot) in try await listSnapshots().reversed()
            where options.installation == nil || snapshot.metadata[Self.installationKey] == options.installation {
            for part in snapshot.parts where names.contains(part.name) && parts[part.name] == nil {
                parts[part.name] = part
                chosen = chosen ?? id
            }
            if parts.count == names.count { break }
        }
        return (chosen, parts)
    }

    /// Finds packs that are stored but listed in no index file (left by a backup that died before
    /// writing its index), reads their headers and indexes them. Returns how many were indexed.
    @discardableResult
    public func indexUnindexedPacks() async throws -> Int {
        let known = index.packs
        let orphans = try await storage.list(.data).filter { info in
            guard let id = ObjectID(hex: info.name) else { return false }
            return known[id] == nil
        }
        var added = 0
        for info in orphans {
            let id = ObjectID(hex: info.name)!
            do {
                let entries = try await readPackHeader(id, size: info.size)
                index.addStored(IndexFile.Pack(id: id, size: info.size, entries: entries))
                added += 1
            } catch let error as RepositoryError {
                logger.warning("pack \(id) is not indexed and its header is unreadable; ignored: \(error.message)")
            }
        }
        if added > 0 { try await flushIndex() }
        return added
    }
}
