import Foundation
@testable import Repository
import Storage
import Testing
import TestSupport

@Suite struct TreeLoadTests {
    /// The repository in `memory` opened afresh through a `CountingStorage` that has counted
    /// nothing yet (opening reads keys, config and index).
    func countedOpen(_ memory: MemoryStorage) async throws -> (CountingStorage, Repository) {
        let counting = CountingStorage(memory)
        let opened = try await Repository.open(storage: counting, password: "pw", logger: testLogger)
        counting.reset()
        return (counting, opened)
    }

    /// Every tree under `root`, read one by one.
    func treesUnder(_ root: BlobID, in repo: Repository) async throws -> [BlobID: Tree] {
        var trees: [BlobID: Tree] = [:]
        var pending = [root]
        while let id = pending.popLast() {
            guard trees[id] == nil else { continue }
            let tree = try await repo.loadTree(id)
            trees[id] = tree
            pending += tree.nodes.compactMap(\.subtree)
        }
        return trees
    }

    /// `n` directories of `m` subdirectories, each with one small file; names and contents
    /// unique to `tag`, so no tree is shared with another call's.
    func makeTree(_ root: String, tag: String, n: Int, m: Int) throws {
        for i in 0..<n {
            for j in 0..<m {
                let dir = "\(root)/\(tag)-d\(i)/\(tag)-e\(j)"
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                try Data("\(tag) \(i) \(j)\n".utf8).write(to: URL(fileURLWithPath: dir + "/f"))
            }
        }
    }

    /// A restore reads the tree packs of its snapshot's trees, each once, and no other snapshot's:
    /// its cost grows with the snapshot, not with the repository's history (it used to load every
    /// tree pack of the repository).
    @Test func restoreReadsOnlyItsSnapshotsTreePacks() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let memory = MemoryStorage()
        let repo = try await makeRepository(memory)
        var snapshots: [Snapshot] = []
        for k in 0..<8 {
            let src = dir.file("src\(k)")
            // Snapshot 4 is large enough for its trees to fill more than one tree pack.
            try makeTree(src, tag: "s\(k)", n: k == 4 ? 40 : 3, m: k == 4 ? 25 : 2)
            snapshots.append(try await repo.backup([.path(src, name: "files")]).snapshot)
        }
        let part = snapshots[4].parts[0]

        // What the snapshot needs, worked out on a separate, uncounted handle.
        let reference = try await Repository.open(storage: memory, password: "pw", logger: testLogger)
        let ownTrees = try await treesUnder(try #require(part.root.subtree), in: reference)
        let ownTreePacks = Set(ownTrees.keys.map { reference.index.lookup($0)!.pack })
        let ownDataPacks = Set(ownTrees.values.flatMap(\.nodes).flatMap { $0.content ?? [] }.map { reference.index.lookup($0)!.pack })
        let allTreePacks = Set(reference.index.allLocations().filter { $0.blob.type == .tree }.map(\.pack))
        let otherTreePacks = allTreePacks.subtracting(ownTreePacks)
        #expect(ownTreePacks.count >= 2, "the test wants a snapshot spanning several tree packs")
        #expect(otherTreePacks.count >= 7, "\(otherTreePacks.count) other tree packs")

        let (counting, opened) = try await countedOpen(memory)
        _ = try await Restorer(repository: opened).restoreTree(part, into: dir.file("out"))
        let packReads = counting.reads.filter { $0.handle.type == .data }.map { ObjectID(hex: $0.handle.name)! }
        let readTreePacks = Set(packReads).intersection(allTreePacks)
        #expect(readTreePacks == ownTreePacks, "read \(readTreePacks.count) tree packs, the snapshot's trees live in \(ownTreePacks.count)")
        #expect(Set(packReads).isDisjoint(with: otherTreePacks), "read other snapshots' tree packs")
        #expect(Set(packReads).isSubset(of: ownTreePacks.union(ownDataPacks)))
        for pack in ownTreePacks { #expect(packReads.filter { $0 == pack }.count == 1, "tree pack \(pack) read more than once") }
        let problems = try expectSameTree(dir.file("src4"), dir.file("out"))
        #expect(problems.isEmpty, "\(problems.prefix(5))")
    }

    /// Parts restored at once from one repository share the tree-pack loads: each pack is read
    /// once, also when both walks want it at the same time.
    @Test func concurrentRestoresShareTreePackLoads() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let memory = MemoryStorage()
        let repo = try await makeRepository(memory)
        try makeTree(dir.file("a"), tag: "a", n: 10, m: 10)
        try makeTree(dir.file("b"), tag: "b", n: 10, m: 10)
        let snapshot = try await repo.backup([.path(dir.file("a"), name: "a"), .path(dir.file("b"), name: "b")]).snapshot
        let (counting, opened) = try await countedOpen(memory)
        let restorer = Restorer(repository: opened)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for part in snapshot.parts {
                group.addTask { _ = try await restorer.restoreTree(part, into: dir.file("out/" + part.name)) }
            }
            try await group.waitForAll()
        }
        let treePacks = Set(opened.index.allLocations().filter { $0.blob.type == .tree }.map(\.pack))
        let treeReads = counting.reads.filter { $0.handle.type == .data && treePacks.contains(ObjectID(hex: $0.handle.name)!) }
        #expect(treeReads.count == treePacks.count, "\(treeReads.count) tree-pack reads for \(treePacks.count) tree packs")
        #expect(treeReads.allSatisfy { $0.range == 0..<opened.index.packSize(ObjectID(hex: $0.handle.name)!)! }, "tree packs are read whole")
        for name in ["a", "b"] { #expect(try expectSameTree(dir.file(name), dir.file("out/" + name)).isEmpty) }
    }

    /// The walk hands files to the writers in batches: with batches of two files (or three
    /// chunks) a pack's blobs are split over many batches and a deduplicated chunk is wanted by
    /// several; the result is the same tree, byte for byte, as one batch gives. Identical
    /// directories (here empty ones) share one tree id, which the walk reads more than once.
    @Test(arguments: [(2, 3), (1, 1), (8192, 32768)])
    func restoreInBatchesIsExact(files: Int, blobs: Int) async throws {
        let dir = TempDir()
        defer { dir.remove() }
        try makeSourceTree(in: dir.file("src"))
        try makeTree(dir.file("src/many"), tag: "m", n: 6, m: 5)
        for k in 0..<4 { try FileManager.default.createDirectory(atPath: dir.file("src/many/empty\(k)/sub"), withIntermediateDirectories: true) }
        let repo = try await makeRepository()
        let part = try await repo.backup([.path(dir.file("src"), name: "files")]).snapshot.parts[0]
        var options = RestoreOptions()
        options.batchFiles = files
        options.batchBlobs = blobs
        let opened = try await Repository.open(storage: repo.storage, password: "pw", logger: testLogger)
        let stats = try await Restorer(repository: opened, options: options).restoreTree(part, into: dir.file("out"))
        let problems = try expectSameTree(dir.file("src"), dir.file("out"))
        #expect(problems.isEmpty, "\(problems.prefix(5))")
        let entries = try describeTree(dir.file("src"))
        #expect(stats.files == entries.values.filter { $0.type != "dir" }.count)
        #expect(stats.dirs == entries.values.filter { $0.type == "dir" }.count)  // the root too
        #expect(stats.bytes == part.stats.bytes)

        // Again over the result, with stray files to delete: the walk clears each directory
        // before the batches write into it.
        try Data("stray".utf8).write(to: URL(fileURLWithPath: dir.file("out/many/stray")))
        options.deleteExtraneous = true
        _ = try await Restorer(repository: opened, options: options).restoreTree(part, into: dir.file("out"))
        #expect(try expectSameTree(dir.file("src"), dir.file("out")).isEmpty)
    }

    /// A backup reads its parent's trees a tree pack at a time, each pack once and whole, not
    /// one range request per directory (24,000 of them for 250,000 files).
    @Test func aBackupReadsItsParentsTreePacksWholeAndOnce() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let memory = MemoryStorage()
        let repo = try await makeRepository(memory)
        try makeTree(dir.file("src"), tag: "p", n: 40, m: 25)
        let first = try await repo.backup([.path(dir.file("src"), name: "files")]).snapshot
        let trees = try await treesUnder(try #require(first.parts[0].root.subtree), in: repo)
        let treePacks = Set(trees.keys.map { repo.index.lookup($0)!.pack })
        #expect(treePacks.count >= 2, "the test wants trees in several packs")

        let (counting, opened) = try await countedOpen(memory)
        let second = try await opened.backup([.path(dir.file("src"), name: "files")]).snapshot
        #expect(second.parts[0].stats.unchangedFiles == 1000)
        #expect(second.parts[0].root.subtree == first.parts[0].root.subtree)
        let reads = counting.reads.filter { $0.handle.type == .data }
        #expect(reads.count == treePacks.count, "\(reads.count) pack reads for \(trees.count) trees in \(treePacks.count) packs")
        #expect(Set(reads.map { ObjectID(hex: $0.handle.name)! }) == treePacks)
        #expect(reads.allSatisfy { $0.range == 0..<opened.index.packSize(ObjectID(hex: $0.handle.name)!)! }, "tree packs are read whole")
    }

    /// A damaged data pack in the middle of a restore written in many batches: the restore
    /// fails naming the pack, while other batches are being written, and does not hang.
    @Test func aDamagedPackFailsABatchedRestore() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let memory = MemoryStorage()
        let repo = try await makeRepository(memory)
        try makeSourceTree(in: dir.file("src"))
        try makeTree(dir.file("src/many"), tag: "d", n: 6, m: 5)
        let part = try await repo.backup([.path(dir.file("src"), name: "files")]).snapshot.parts[0]
        let dataPacks = try await memory.list(.data).map { Handle(.data, $0.name) }.filter { !treePack($0, repo) }
        #expect(dataPacks.count >= 2)
        let victim = try #require(dataPacks.last)
        memory.tamper(victim) { $0[$0.count / 3] ^= 0x10 }
        var options = RestoreOptions()
        options.batchFiles = 2
        let opened = try await Repository.open(storage: memory, password: "pw", logger: testLogger)
        let error = await #expect(throws: RepositoryError.self) {
            _ = try await Restorer(repository: opened, options: options).restoreTree(part, into: dir.file("out"))
        }
        #expect(error?.code == .corrupted, "\(String(describing: error))")
        #expect(error?.message.contains(String(victim.name.prefix(8))) == true, "\(String(describing: error))")
    }
}
