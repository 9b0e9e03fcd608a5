import Foundation
@testable import Repository
import Storage
import Testing
import TestSupport

@Suite struct RoundTripTests {
    @Test func treeAndStreamRoundTripWithMetadata() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        try makeSourceTree(in: dir.file("src"))
        var gen = SeededBytes(seed: 11)
        let stream = gen.text(700_000) + gen.data(300_000)
        try stream.write(to: URL(fileURLWithPath: dir.file("dump")))

        let storage = MemoryStorage()
        let repo = try await makeRepository(storage)
        let fd = open(dir.file("dump"), O_RDONLY)
        defer { close(fd) }
        let result = try await repo.backup([.path(dir.file("src"), name: "files"), .stream(fd: fd, name: "db.dump")])
        #expect(result.snapshot.parts.map(\.name) == ["files", "db.dump"])
        #expect(result.snapshot.parts[1].stats.bytes == Int64(stream.count))
        #expect(result.packsStored > 2, "small packs: several expected")

        // Open afresh (index from storage), restore, compare bytes and metadata.
        let reopened = try await Repository.open(storage: storage, password: "pw", logger: testLogger)
        let (_, snapshot) = try await reopened.resolveSnapshot("latest")
        let restorer = Restorer(repository: reopened)
        let stats = try await restorer.restoreTree(snapshot.parts[0], into: dir.file("out"))
        #expect(stats.bytes == snapshot.parts[0].stats.bytes)
        let problems = try expectSameTree(dir.file("src"), dir.file("out"))
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")

        let outFD = open(dir.file("dump.out"), O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        _ = try await restorer.restoreStream(snapshot.parts[1].root, to: outFD, name: "dump.out")
        close(outFD)
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir.file("dump.out"))) == stream)
    }

    /// A repository of format version 2 writes version 2 packs (named from prefix, header and
    /// trailer); one of version 1 keeps getting version 1 packs (named by the SHA-256 of all their
    /// bytes), so older releases still read it; this program reads, checks and restores both.
    @Test(arguments: [1, 2])
    func packsFollowTheRepositorysVersionAndBothRestore(version: Int) async throws {
        let dir = TempDir()
        defer { dir.remove() }
        try makeSourceTree(in: dir.file("src"))
        let storage = MemoryStorage()
        var options = testOptions()
        options.version = version
        let repo = try await Repository.initialize(storage: storage, password: "pw", options: options, logger: testLogger)
        _ = try await repo.backup([.path(dir.file("src"), name: "files")])

        let reopened = try await Repository.open(storage: storage, password: "pw", logger: testLogger)
        #expect(reopened.config.version == version)
        let packs = try await storage.list(.data)
        #expect(packs.count >= 2, "a data pack and a tree pack at least")
        for info in packs {
            let bytes = try await storage.load(Handle(.data, info.name))
            #expect(Int(bytes[4]) == version, "pack \(info.name) has version \(bytes[4])")
            let headerLength = Int(bytes.suffix(8).prefix(4).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) })
            let named = version == 1 ? ObjectID(hashing: bytes) : ObjectID(hashing: bytes.prefix(5) + bytes.suffix(headerLength + 8))
            #expect(named.hex == info.name)
        }
        let report = try await Checker(repository: reopened).check(readData: true)
        #expect(report.errors.isEmpty, "\(report.errors)")
        let (_, snapshot) = try await reopened.resolveSnapshot("latest")
        _ = try await Restorer(repository: reopened).restoreTree(snapshot.parts[0], into: dir.file("out"))
        let problems = try expectSameTree(dir.file("src"), dir.file("out"))
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
        // A format this program does not know cannot be created.
        options.version = formatVersion + 1
        await #expect(throws: RepositoryError.self) {
            try await Repository.initialize(storage: MemoryStorage(), password: "pw", options: options, logger: testLogger)
        }
    }

    /// A stream's chunk list is a blob of its own: the part (what an agent's result line and the
    /// snapshot carry) holds one id however long the stream, and a snapshot written by version 1,
    /// with the chunks inline, still restores.
    @Test func aStreamPartCarriesOneChunkListIdAndOldInlinePartsStillRestore() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        var gen = SeededBytes(seed: 13)
        let stream = gen.data(6_000_000)
        try stream.write(to: URL(fileURLWithPath: dir.file("dump")))
        let storage = MemoryStorage()
        let repo = try await makeRepository(storage)
        let fd = open(dir.file("dump"), O_RDONLY)
        defer { close(fd) }
        let result = try await repo.backup([.stream(fd: fd, name: "db.dump")])
        let part = result.snapshot.parts[0]
        #expect(part.root.content == nil && part.root.contentList != nil)
        #expect(result.snapshot.version == 2)
        let chunks = try await repo.chunks(of: part.root)
        #expect(chunks.count > 10, "a stream of many chunks")
        #expect(JSON.encode(part).count < 1024, "the part stays small: \(JSON.encode(part).count) bytes for \(chunks.count) chunks")

        let reopened = try await Repository.open(storage: storage, password: "pw", logger: testLogger)
        func restored(_ node: Node) async throws -> Data {
            let outFD = open(dir.file("out"), O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            _ = try await Restorer(repository: reopened).restoreStream(node, to: outFD, name: "out")
            close(outFD)
            return try Data(contentsOf: URL(fileURLWithPath: dir.file("out")))
        }
        #expect(try await restored(part.root) == stream)
        // What version 1 wrote: the same chunks inline, in a version 1 snapshot.
        var inline = part
        inline.root.contentList = nil
        inline.root.content = chunks
        var old = result.snapshot
        old.version = 1
        old.parts = [inline]
        let oldID = try await reopened.saveSnapshot(old)
        let loaded = try await reopened.loadSnapshot(oldID)
        #expect(try await restored(loaded.parts[0].root) == stream)
        // A snapshot from a newer version is refused, not misread.
        old.version = 3
        let newer = try await reopened.saveSnapshot(old)
        await #expect(throws: RepositoryError.self) { _ = try await reopened.loadSnapshot(newer) }
        // check follows the chunk list and notices when it is gone from the index.
        #expect(try await Checker(repository: reopened).check(readData: true).errors.filter { !$0.contains("format version 3") }.isEmpty)
    }

    @Test func deduplicatesWithinAndAcrossSnapshots() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        var gen = SeededBytes(seed: 12)
        let content = gen.data(400_000)
        try FileManager.default.createDirectory(atPath: dir.file("src"), withIntermediateDirectories: true)
        for i in 0..<5 { try content.write(to: URL(fileURLWithPath: dir.file("src/copy\(i)"))) }
        let repo = try await makeRepository()
        let first = try await repo.backup([.path(dir.file("src"), name: "files")])
        #expect(first.snapshot.parts[0].stats.newBytes == Int64(content.count), "five copies stored once")
        #expect(first.bytesStored < Int64(content.count) * 2)

        var options = BackupOptions()
        options.force = true  // read everything again: dedup, not change detection, must skip it
        let second = try await repo.backup([.path(dir.file("src"), name: "files")], options: options)
        #expect(second.packsStored == 0)
        #expect(second.snapshot.parts[0].stats.newBytes == 0)
        #expect(second.snapshot.parts[0].stats.unchangedFiles == 0)
    }

    @Test func unchangedFilesAreNotReadAgainButChangedOnesAre() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        try makeSourceTree(in: dir.file("src"))
        let repo = try await makeRepository()
        let first = try await repo.backup([.path(dir.file("src"), name: "files")])
        let regularFiles = first.snapshot.parts[0].stats.files - 2  // minus the two symlinks

        var gen = SeededBytes(seed: 13)
        try gen.data(50_000).write(to: URL(fileURLWithPath: dir.file("src/a/text.txt")))
        let second = try await repo.backup([.path(dir.file("src"), name: "files")])
        #expect(second.snapshot.parent == first.id)
        #expect(second.snapshot.parts[0].stats.unchangedFiles == regularFiles - 1)
        #expect(second.snapshot.parts[0].stats.newBytes == 50_000)

        let restorer = Restorer(repository: repo)
        _ = try await restorer.restoreTree(second.snapshot.parts[0], into: dir.file("out"))
        #expect(try expectSameTree(dir.file("src"), dir.file("out")).isEmpty)
    }

    /// The parent is found by part name (and installation, when given), not by host name: the
    /// controller writes snapshots under its own host name while agents on other hosts store the
    /// parts, so a backup from another host used to find no parent and read every file again.
    @Test func theParentIsFoundWhateverHostWroteIt() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        try makeSourceTree(in: dir.file("src"))
        let repo = try await makeRepository()
        // The controller's way: an agent (host "agent-0") stores the part, the controller (host
        // "controller") writes the snapshot with the installation's id.
        var agent = BackupOptions()
        agent.hostname = "agent-0"
        let first = try await repo.storeParts([.path(dir.file("src"), name: "files/projects")], options: agent)
        var controller = BackupOptions()
        controller.hostname = "controller"
        controller.metadata = [Repository.installationKey: "che-1"]
        let (firstID, _) = try await repo.commitSnapshot(parts: first.parts, options: controller)
        let files = try describeTree(dir.file("src")).values.filter { $0.type == "file" }.count  // regular files; links are always stored
        #expect(files > 30 && first.parts[0].stats.unchangedFiles == 0)

        // The agent again, in a new pod with another host name.
        agent.hostname = "agent-1"
        let second = try await repo.storeParts([.path(dir.file("src"), name: "files/projects")], options: agent)
        #expect(second.parent == firstID)
        #expect(second.parts[0].stats.unchangedFiles == files, "\(second.parts[0].stats.unchangedFiles) of \(files) files unchanged")
        #expect(second.parts[0].stats.newBytes == 0)

        // By installation: the same installation matches from any host, another one does not.
        var same = BackupOptions()
        same.hostname = "controller-2"
        same.installation = "che-1"
        let third = try await repo.storeParts([.path(dir.file("src"), name: "files/projects")], options: same)
        #expect(third.parent == firstID && third.parts[0].stats.unchangedFiles == files)
        var other = same
        other.installation = "che-2"
        let fourth = try await repo.storeParts([.path(dir.file("src"), name: "files/projects")], options: other)
        #expect(fourth.parent == nil && fourth.parts[0].stats.unchangedFiles == 0)
    }

    /// A file renamed to a canonically equivalent spelling (é composed → e + combining accent)
    /// is another name to the file system. Swift's `String ==` calls the two equal; the re-backup
    /// must still store the new bytes, not reuse the parent's tree (found in review, session 7).
    @Test func aNameRespelledInAnotherNormalFormIsStoredAsItsBytes() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let composed = "caf\u{e9}", decomposed = "cafe\u{301}"
        #expect(composed == decomposed && !composed.utf8.elementsEqual(decomposed.utf8))
        try FileManager.default.createDirectory(atPath: dir.file("src/d"), withIntermediateDirectories: true)
        try Data("menu".utf8).write(to: URL(fileURLWithPath: dir.file("src/d/") + composed))
        let repo = try await makeRepository()
        _ = try await repo.backup([.path(dir.file("src"), name: "files")])
        #expect(rename(dir.file("src/d/") + composed, dir.file("src/d/") + decomposed) == 0)
        let second = try await repo.backup([.path(dir.file("src"), name: "files")])
        #expect(second.snapshot.parts[0].stats.unchangedFiles == 0)  // matched by bytes: another name
        _ = try await Restorer(repository: repo).restoreTree(second.snapshot.parts[0], into: dir.file("out"))
        let names = try FS.list(dir.file("out/d"))
        #expect(names.count == 1 && Array(names[0].utf8) == Array(decomposed.utf8), "\(names.map { Array($0.utf8) })")
    }

    @Test func restoreWithDeleteMakesTheTargetExactlyTheSnapshot() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        try makeSourceTree(in: dir.file("src"))
        let repo = try await makeRepository()
        let result = try await repo.backup([.path(dir.file("src"), name: "files")])
        try makeSourceTree(in: dir.file("out"), seed: 99)
        try Data("stray".utf8).write(to: URL(fileURLWithPath: dir.file("out/stray")))
        try FileManager.default.createDirectory(atPath: dir.file("out/a/straydir/x"), withIntermediateDirectories: true)
        var options = RestoreOptions()
        options.deleteExtraneous = true
        _ = try await Restorer(repository: repo, options: options).restoreTree(result.snapshot.parts[0], into: dir.file("out"))
        let problems = try expectSameTree(dir.file("src"), dir.file("out"))
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
    }

    /// Restore never replaces a file with a directory: a target that is a regular file is
    /// refused and left as it was. A non-empty directory is restored into (the agents' rule).
    @Test func aTargetThatIsAFileIsRefusedAndKept() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        try makeSourceTree(in: dir.file("src"))
        let repo = try await makeRepository()
        let result = try await repo.backup([.path(dir.file("src"), name: "files")])
        let precious = Data("not a directory\n".utf8)
        try precious.write(to: URL(fileURLWithPath: dir.file("file")))
        await expectCode(.invalidArgument) {
            _ = try await Restorer(repository: repo).restoreTree(result.snapshot.parts[0], into: dir.file("file"))
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir.file("file"))) == precious)
        #expect(throws: RepositoryError.self) { try Restorer.checkTarget(dir.file("file"), overwrite: true) }
        try FileManager.default.createDirectory(atPath: dir.file("full"), withIntermediateDirectories: true)
        try precious.write(to: URL(fileURLWithPath: dir.file("full/other")))
        #expect(throws: RepositoryError.self) { try Restorer.checkTarget(dir.file("full"), overwrite: false) }
        try Restorer.checkTarget(dir.file("full"), overwrite: true)
        try Restorer.checkTarget(dir.file("missing"), overwrite: false)
        _ = try await Restorer(repository: repo).restoreTree(result.snapshot.parts[0], into: dir.file("full"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir.file("full/other"))) == precious)
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir.file("full/random.bin"))) ==
                Data(contentsOf: URL(fileURLWithPath: dir.file("src/random.bin"))))
    }

    @Test func secondKeyOpensTheSameRepository() async throws {
        let storage = MemoryStorage()
        let repo = try await makeRepository(storage)
        try await repo.addKey(password: "second", kdf: KDFParameters(n: 1 << 10))
        let a = try await Repository.open(storage: storage, password: "pw", logger: testLogger)
        let b = try await Repository.open(storage: storage, password: "second", logger: testLogger)
        #expect(a.config.id == b.config.id)
        #expect(try await storage.list(.keys).count == 2)
    }

    @Test func snapshotIdsResolveByUniquePrefix() async throws {
        let repo = try await makeRepository()
        var ids: [SnapshotID] = []
        for i in 0..<17 {  // 17 ids over 16 first digits: at least two share a one-digit prefix
            let r = try await repo.backup([.stream(fd: try pipeWith("snapshot \(i)"), name: "s")])
            ids.append(r.id)
        }
        for id in ids { #expect(try await repo.resolveSnapshot(String(id.hex.prefix(12))).id == id) }
        #expect(try await repo.resolveSnapshot("latest").id == ids.last)
        let firstDigits = Dictionary(grouping: ids) { $0.hex.prefix(1) }
        let shared = try #require(firstDigits.first { $0.value.count > 1 }?.key)
        await expectCode(.ambiguousSnapshot) { _ = try await repo.resolveSnapshot(String(shared)) }
        let candidates: [String] = "0123456789abcdef".map { String(repeating: $0, count: 8) }
        let unused = try #require(candidates.first { p in !ids.contains { $0.hex.hasPrefix(p) } })
        await expectCode(.snapshotNotFound) { _ = try await repo.resolveSnapshot(unused) }
        await expectCode(.invalidArgument) { _ = try await repo.resolveSnapshot("xyz") }
    }
}

/// A pipe already holding `text`, write end closed: reading it yields `text` then EOF.
func pipeWith(_ text: String) throws -> Int32 {
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { throw ConformanceFailure("pipe failed") }
    _ = text.utf8CString.withUnsafeBytes { write(fds[1], $0.baseAddress, text.utf8.count) }
    close(fds[1])
    return fds[0]
}

func expectCode(_ code: RepositoryError.Code, sourceLocation: SourceLocation = #_sourceLocation,
                _ body: () async throws -> Void) async {
    do {
        try await body()
        Issue.record("expected \(code), but it succeeded", sourceLocation: sourceLocation)
    } catch let error as RepositoryError {
        #expect(error.code == code, "got \(error.code): \(error.message)", sourceLocation: sourceLocation)
        #expect(!error.message.contains("\n"), "error messages are one line", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected \(code), got \(error)", sourceLocation: sourceLocation)
    }
}
