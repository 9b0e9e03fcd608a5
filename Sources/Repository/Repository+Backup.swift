import Foundation
import Storage

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
        guard !sources.isEmpty else { throw RepositoryError(.invalidArgument, "nothing to back up") }
        let names = sources.map(\.name)
        if let dup = names.first(where: { name in names.filter { $0 == name }.count > 1 }) {
            throw RepositoryError(.invalidArgument, "two parts are named \"\(dup)\": part names must be unique")
        }
        let recovered = try await indexUnindexedPacks()
        if recovered > 0 { logger.info("indexed \(recovered) packs left by an interrupted backup") }

        let parents = try await findParents(names: names, options: options)
        let writer = BlobWriter(repository: self, connections: options.connections)
        let archiver = Archiver(repository: self, writer: writer, progress: progress,
                                fileConcurrency: options.fileConcurrency)
        do {
            var parts: [Part] = []
            for source in sources {
                switch source {
                case .path(let path, let name):
                    parts.append(try await archiver.backupTree(path: path, name: name, parent: parents.parts[name]))
                case .stream(let fd, let name):
                    parts.append(try await archiver.backupStream(fd: fd, name: name))
                }
            }
            try await writer.flush()
            let snapshot = Snapshot(time: Date(), hostname: options.hostname,
                                    username: ProcessInfo.processInfo.environment["USER"] ?? "",
                                    tags: options.tags, parent: parents.snapshot, program: programVersion,
                                    parts: parts, metadata: options.metadata)
            let id = try await saveSnapshot(snapshot)
            return BackupResult(id: id, snapshot: snapshot, packsStored: writer.packsStored, bytesStored: writer.bytesStored)
        } catch {
            await writer.salvage()
            throw error
        }
    }

    private func findParents(names: [String], options: BackupOptions) async throws
        -> (snapshot: SnapshotID?, parts: [String: Part]) {
        if options.force { return (nil, [:]) }
        if let id = options.parent {
            let snapshot = try await loadSnapshot(id)
            return (id, Dictionary(snapshot.parts.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a }))
        }
        var parts: [String: Part] = [:]
        var chosen: SnapshotID?
        for (id, snapshot) in try await listSnapshots().reversed() where snapshot.hostname == options.hostname {
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
