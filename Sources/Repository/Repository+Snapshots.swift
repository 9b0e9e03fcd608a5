import Foundation
import Storage

extension Repository {
    /// Writes a snapshot record. Callers must have flushed every blob and index file it refers to.
    public func saveSnapshot(_ snapshot: Snapshot) async throws -> SnapshotID {
        try await saveEncrypted(.snapshots, kind: .snapshot, snapshot)
    }

    public func loadSnapshot(_ id: SnapshotID) async throws -> Snapshot {
        let snapshot = try await loadEncrypted(.snapshots, kind: .snapshot, id, as: Snapshot.self)
        guard snapshot.version <= Snapshot.currentVersion else {
            throw RepositoryError(.unsupported, "snapshot \(id) has format version \(snapshot.version); this program reads up to \(Snapshot.currentVersion): upgrade it")
        }
        return snapshot
    }

    /// The chunks of a file or stream node, in order: inline, or from its chunk list blob.
    public func chunks(of node: Node) async throws -> [BlobID] {
        guard let list = node.contentList else { return node.content ?? [] }
        return try JSON.decode(ChunkList.self, try await loadBlob(list), what: "chunk list \(list) of \(node.name)").content
    }

    /// Every snapshot that can be read, oldest first. A damaged snapshot file is skipped with a
    /// warning and remembered in `damaged` (`repo repair snapshots` removes it).
    public func listSnapshots() async throws -> [(id: SnapshotID, snapshot: Snapshot)] {
        let names = try await storage.list(.snapshots).compactMap { ObjectID(hex: $0.name) }
        let loaded = try await withThrowingTaskGroup(of: (SnapshotID, Snapshot)?.self) { group in
            for id in names {
                group.addTask {
                    do { return (id, try await self.loadSnapshot(id)) } catch let error as RepositoryError where error.code == .corrupted {
                        self.noteDamaged("snapshots/\(id.hex)", error.message)
                        return nil
                    }
                }
            }
            var all: [(id: SnapshotID, snapshot: Snapshot)] = []
            for try await pair in group { if let pair { all.append(pair) } }
            return all
        }
        return loaded.sorted { ($0.snapshot.time, $0.id) < ($1.snapshot.time, $1.id) }
    }

    /// Finds a snapshot by `latest` or by a unique prefix of its id.
    public func resolveSnapshot(_ reference: String) async throws -> (id: SnapshotID, snapshot: Snapshot) {
        let ref = reference.lowercased()
        if ref == "latest" {
            guard let last = try await listSnapshots().last else {
                throw RepositoryError(.snapshotNotFound, "the repository at \(storage.location) has no snapshots")
            }
            return last
        }
        let id = try await resolveObject(.snapshots, reference, what: "snapshot", hint: "use hex digits or \"latest\"",
                                         notFound: .snapshotNotFound, ambiguous: .ambiguousSnapshot)
        return (id, try await loadSnapshot(id))
    }

    /// The object of `type` whose name starts with `reference` (hex digits, unique).
    func resolveObject(_ type: FileType, _ reference: String, what: String, hint: String,
                       notFound: RepositoryError.Code, ambiguous: RepositoryError.Code) async throws -> ObjectID {
        let ref = reference.lowercased()
        guard !ref.isEmpty, ref.count <= 64, ref.allSatisfy(\.isHexDigit) else {
            throw RepositoryError(.invalidArgument, "invalid \(what) id \"\(reference)\": \(hint)")
        }
        let matches = try await storage.list(type).map(\.name).filter { $0.hasPrefix(ref) }
        guard let first = matches.first, let id = ObjectID(hex: first) else {
            throw RepositoryError(notFound, "no \(what) with id \(reference) in \(storage.location)")
        }
        guard matches.count == 1 else {
            throw RepositoryError(ambiguous, "\(what) id \(reference) is ambiguous: it matches \(matches.count) \(what)s")
        }
        return id
    }
}
