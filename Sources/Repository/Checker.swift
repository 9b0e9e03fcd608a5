import Foundation
import Storage

public struct CheckReport: Sendable {
    public var errors: [String] = []
    public var warnings: [String] = []
    public var snapshots = 0
    public var packs = 0
    public var blobs = 0
    public var packsRead = 0
    /// Bytes (stored) of blobs no snapshot refers to.
    public var orphanedBytes: Int64 = 0
}

/// Verifies a repository: every object's name against its hash, every snapshot's trees and
/// chunks against the index, the index against the packs, and with `readData` every byte of
/// every pack (authentication of each blob, its id, and the pack header against the index).
public final class Checker: Sendable {
    let repo: Repository
    let progress: ProgressCounters

    public init(repository: Repository, progress: ProgressCounters = ProgressCounters()) {
        repo = repository
        self.progress = progress
    }

    public func check(readData: Bool, connections: Int = 4) async throws -> CheckReport {
        var report = CheckReport()
        let storage = repo.storage
        // A consistent view while a backup may run: the snapshot list first, then the index read
        // again. A snapshot is written only after the index files of its data, so every snapshot
        // listed here finds its blobs in the index read after it.
        let snapshotFiles = try await storage.list(.snapshots)
        try await repo.loadIndex()

        // Key, index and snapshot files: names must match content.
        for type in [FileType.keys, .index] {
            for info in try await storage.list(type) {
                guard let id = ObjectID(hex: info.name) else {
                    report.warnings.append("\(type.rawValue)/\(info.name): not a che-backup file name, ignored")
                    continue
                }
                do {
                    let data = try await repo.loadObject(type, id)
                    if type == .index {
                        _ = try Envelope.open(data, kind: .index, key: repo.keys.encryption, what: "index file \(id)")
                    }
                } catch let error as RepositoryError {
                    report.errors.append(error.message)
                }
            }
        }

        // Packs: all indexed packs exist with the indexed size; unindexed ones are reported.
        let stored = Dictionary(try await storage.list(.data).map { ($0.name, $0.size) }, uniquingKeysWith: { a, _ in a })
        let indexed = repo.index.packs
        report.packs = indexed.count
        report.blobs = repo.index.blobCount
        for (pack, size) in indexed {
            guard let actual = stored[pack.hex] else {
                report.errors.append("pack \(pack) is in the index but missing from the repository")
                continue
            }
            if actual != size { report.errors.append("pack \(pack) has \(actual) bytes, the index says \(size): truncated or damaged") }
        }
        for name in stored.keys {
            guard let id = ObjectID(hex: name) else { continue }
            if indexed[id] == nil { report.warnings.append("pack \(id) is in no index (left by an interrupted backup)") }
        }

        // Snapshots and everything they reference.
        do { try await repo.preloadTrees(connections: connections) } catch let error as RepositoryError {
            report.errors.append(error.message)  // a damaged tree pack; each tree is then read on its own below
        }
        var seenTrees = Set<BlobID>()
        var referenced = Set<BlobID>()
        var parents: [(SnapshotID, SnapshotID)] = []
        let snapshotIDs = Set(snapshotFiles.compactMap { ObjectID(hex: $0.name) })
        for id in snapshotIDs.sorted() {
            do {
                let snapshot = try await repo.loadSnapshot(id)
                report.snapshots += 1
                if let parent = snapshot.parent { parents.append((id, parent)) }
                for part in snapshot.parts {
                    let path = "snapshot \(id) part \(part.name)"
                    // A directory root's name is informational; any other root is restored under its name.
                    if part.kind == .tree && part.root.type != .dir { checkName(part.root, in: path, report: &report) }
                    try await checkNode(part.root, path: path, seen: &seenTrees, referenced: &referenced, report: &report)
                }
            } catch let error as RepositoryError {
                report.errors.append(error.message)
            }
        }
        // What deletion leaves behind (docs/format.md, "What can be detected"): a snapshot whose
        // parent is gone, and data no snapshot refers to.
        for (child, parent) in parents where !snapshotIDs.contains(parent) {
            report.warnings.append("snapshot \(child) was made on top of snapshot \(parent), which is no longer in the repository (forgotten, or deleted?)")
        }
        let orphans = repo.index.unreferenced(by: referenced.union(seenTrees))
        if orphans.blobs > 0 {
            report.orphanedBytes = orphans.bytes
            report.warnings.append("\(orphans.blobs) blobs (\(orphans.bytes) bytes) in \(orphans.packs.count) packs belong to no snapshot: a snapshot was deleted, or a backup did not finish (or is running now)")
        }

        if readData { try await readPacks(indexed, connections: connections, report: &report) }
        return report
    }

    private func checkNode(_ node: Node, path: String, seen: inout Set<BlobID>, referenced: inout Set<BlobID>,
                           report: inout CheckReport) async throws {
        var chunks = node.content ?? []
        if let list = node.contentList {
            referenced.insert(list)
            if !repo.index.has(list) {
                report.errors.append("\(path)/\(node.name): chunk list \(list) is not in the index")
            } else {
                do { chunks = try await repo.chunks(of: node) } catch let error as RepositoryError {
                    report.errors.append("\(path)/\(node.name): \(error.message)")
                }
            }
        }
        for id in chunks where !repo.index.has(id) {
            report.errors.append("\(path)/\(node.name): chunk \(id) is not in the index")
        }
        referenced.formUnion(chunks)
        guard node.type == .dir else { return }
        guard let subtree = node.subtree else {
            report.errors.append("\(path)/\(node.name): directory without a tree")
            return
        }
        guard seen.insert(subtree).inserted else { return }
        do {
            let tree = try await repo.loadTree(subtree)
            for child in tree.nodes {
                checkName(child, in: "\(path)/\(node.name)", report: &report)
                try await checkNode(child, path: "\(path)/\(node.name)", seen: &seen, referenced: &referenced, report: &report)
            }
        } catch let error as RepositoryError {
            report.errors.append("\(path)/\(node.name): \(error.message)")
        }
    }

    /// A name restore would refuse (the same rule, `Node.validateName`) is an error.
    private func checkName(_ node: Node, in path: String, report: inout CheckReport) {
        do { try node.validateName(in: path) } catch let error as RepositoryError {
            report.errors.append(error.message)
        } catch {
            report.errors.append("\(path): \(error)")
        }
    }

    private func readPacks(_ packs: [PackID: Int64], connections: Int, report: inout CheckReport) async throws {
        let list = Array(packs)
        let indexed = Dictionary(grouping: repo.index.allLocations(), by: \.pack)
        progress.setTotal(list.reduce(0) { $0 + $1.value })
        try await withThrowingTaskGroup(of: [String].self) { group in
            var next = 0
            func launch() {
                guard next < list.count else { return }
                let (pack, size) = list[next]
                next += 1
                group.addTask { await self.readPack(pack, size: size, indexed: indexed[pack] ?? []) }
            }
            for _ in 0..<max(1, connections) { launch() }
            while let problems = try await group.next() {
                report.errors.append(contentsOf: problems)
                report.packsRead += 1
                launch()
            }
        }
    }

    /// Every problem found in one pack, as messages.
    private func readPack(_ pack: PackID, size: Int64, indexed: [BlobLocation]) async -> [String] {
        defer { progress.add(bytes: size, items: 1) }
        do {
            let data = try await repo.loadStoredObject(.data, pack)
            let entries = try PackFormat.verifyWhole(data, pack: pack, key: repo.keys.encryption)
            var problems: [String] = []
            let inHeader = Dictionary(entries.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
            for location in indexed where inHeader[location.blob.id] != location.blob {
                problems.append("pack \(pack): the index lists blob \(location.blob.id) at a place its header does not")
            }
            for entry in entries {
                let location = BlobLocation(pack: pack, blob: entry)
                if repo.index.lookup(entry.id) == nil {
                    problems.append("blob \(entry.id) in pack \(pack) is not in the index")
                }
                do {
                    let end = Int(entry.offset) + Int(entry.length)
                    _ = try data.withUnsafeBytes { raw in
                        try repo.openBlob(UnsafeRawBufferPointer(rebasing: raw[Int(entry.offset)..<end]), location)
                    }
                } catch let error as RepositoryError {
                    problems.append(error.message)
                }
            }
            return problems
        } catch let error as RepositoryError {
            return [error.message]
        } catch {
            return ["pack \(pack): \(error)"]
        }
    }
}
