import Foundation
import Logging
import Repository
import Storage

/// A violated storage contract, with what was expected.
public struct ConformanceFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ text: String) { description = text }
}

/// The contract every backend must meet (see the `Storage` module comment). Each case throws a
/// `ConformanceFailure` naming the broken rule. Cases use their own file names, so they can share
/// one backend; they clean up after themselves.
public enum StorageConformance {
    public typealias Case = @Sendable (any Storage, Harness) async throws -> Void

    /// Backend-specific hooks.
    public struct Harness: Sendable {
        /// Leaves behind what a writer that died mid-upload of `handle` would leave (a partial
        /// temporary file); nil when the backend cannot have one (in memory).
        public var simulateInterruptedUpload: (@Sendable (Handle, Data) async throws -> Void)?
        /// Files to create for the listing case (more than 1000, to cross S3's page size).
        public var listCount: Int

        public init(simulateInterruptedUpload: (@Sendable (Handle, Data) async throws -> Void)? = nil, listCount: Int = 1100) {
            self.simulateInterruptedUpload = simulateInterruptedUpload
            self.listCount = listCount
        }
    }

    public static let cases: [(name: String, run: Case)] = [
        ("round trip", roundTrip),
        ("ranges", ranges),
        ("not found", notFound),
        ("listing thousands of files", listing),
        ("overwrite rules", overwrite),
        ("types are separate", typesSeparate),
        ("concurrent uploads", concurrentUploads),
        ("interrupted upload leaves nothing visible", interruptedUpload),
        ("invalid names", invalidNames),
        ("staged files", stagedFiles),
        ("streamed loads", streamedLoads),
        ("create-only saves", createOnly),
    ]

    static func expect(_ condition: Bool, _ message: @autoclosure () -> String) throws {
        if !condition { throw ConformanceFailure(message()) }
    }

    static func expectError(_ code: StorageError.Code, _ what: String, _ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let error as StorageError {
            try expect(error.code == code, "\(what): expected \(code), got \(error.code): \(error)")
            return
        }
        throw ConformanceFailure("\(what): expected \(code), but it succeeded")
    }

    /// A fresh name shaped like every real one: 64 lowercase hex digits (a SHA-256). Servers such
    /// as rclone's rely on that shape (data/XX/ directories, caches keyed by name).
    static func name(_ tag: String) -> String {
        var rng = SystemRandomNumberGenerator()
        return (0..<4).map { _ in String(format: "%016llx", rng.next() as UInt64) }.joined()
    }

    static let roundTrip: Case = { storage, _ in
        var gen = SeededBytes(seed: 1)
        for size in [0, 1, 4097, 1 << 20] {
            let handle = Handle(.data, name("rt"))
            let data = gen.data(size)
            try await storage.save(handle, data: data)
            try expect(try await storage.load(handle) == data, "load returned other bytes for \(size) bytes")
            try expect(try await storage.stat(handle).size == Int64(size), "stat size wrong for \(size) bytes")
            try expect(try await storage.list(.data).contains { $0.name == handle.name && $0.size == Int64(size) },
                       "list lacks a saved file")
            try await storage.remove(handle)
            try expect(!(try await storage.exists(handle)), "a removed file still exists")
        }
        let config = Data("config bytes".utf8)
        try await storage.save(.config, data: config)
        try expect(try await storage.load(.config) == config, "config round trip failed")
        try await storage.remove(.config)
    }

    /// Objects written to a staging file (out of order, as parallel writers do) and stored from
    /// it; a staging file dropped unsaved leaves nothing visible. Large loads go through pooled
    /// buffers: their bytes must survive later loads that reuse the pool.
    static let stagedFiles: Case = { storage, _ in
        var gen = SeededBytes(seed: 9)
        let before = try await storage.list(.data).count
        var kept: [(Handle, Data)] = []
        for size in [0, 5000, 3 << 20] {
            let data = gen.data(size)
            let staged = try storage.makeStagingFile(for: .data)
            let half = size / 2
            try staged.write(data.subdata(in: half..<size), at: Int64(half))
            try staged.write(data.subdata(in: 0..<half), at: 0)
            let stagedSize = try staged.finish()
            let sha256 = try staged.sha256()
            try expect(stagedSize == Int64(size), "a staged file of \(size) bytes reports \(stagedSize)")
            try expect(Data(sha256) == Crypto.sha256(data).data, "a staged file's SHA-256 is wrong for \(size) bytes")
            let handle = Handle(.data, name("st"))
            try await storage.save(handle, staged: staged)
            kept.append((handle, data))
        }
        let loaded = try await kept.asyncMap { try await storage.load($0.0) }
        let ranged = try await storage.load(kept[2].0, range: 1..<Int64((3 << 20) - 1))
        for ((handle, data), got) in zip(kept, loaded) {
            try expect(got == data, "\(handle) stored from a staged file reads back other bytes")
        }
        try expect(ranged == kept[2].1.subdata(in: 1..<((3 << 20) - 1)), "a large range reads back other bytes")
        do {
            let abandoned = try storage.makeStagingFile(for: .data)
            try abandoned.write(gen.data(1000), at: 0)
        }
        try expect(try await storage.list(.data).count == before + kept.count, "an abandoned staging file is visible")
        for (handle, _) in kept { try await storage.remove(handle) }
    }

    /// `stream` hands over exactly the range's bytes, in order; a range past the end, a missing
    /// file and an error thrown by the consumer end it with the right error.
    static let streamedLoads: Case = { storage, _ in
        var gen = SeededBytes(seed: 10)
        let data = gen.data((3 << 20) + 12345)
        let handle = Handle(.data, name("stream"))
        try await storage.save(handle, data: data)
        for r: Range<Int64> in [0..<Int64(data.count), 1..<Int64(data.count - 1), 1_000_000..<2_500_000, 7..<8, 100..<100] {
            let got = Locked(Data())
            try await storage.stream(handle, range: r) { piece in got.withLock { $0.append(contentsOf: piece) } }
            try expect(got.value == data.subdata(in: Int(r.lowerBound)..<Int(r.upperBound)), "streamed range \(r) returned other bytes")
        }
        try await expectError(.invalidRange, "streamed range past the end") {
            try await storage.stream(handle, range: 10..<Int64(data.count + 1)) { _ in }
        }
        try await expectError(.notFound, "stream of a missing file") {
            try await storage.stream(Handle(.data, name("missing")), range: 0..<1) { _ in }
        }
        struct Stop: Error {}
        do {
            try await storage.stream(handle, range: 0..<Int64(data.count)) { _ in throw Stop() }
            throw ConformanceFailure("a consumer's error did not end the stream")
        } catch is Stop {}
        try expect(try await storage.load(handle) == data, "the backend works after an aborted stream")
        try await storage.remove(handle)
    }

    static let ranges: Case = { storage, _ in
        var gen = SeededBytes(seed: 2)
        let data = gen.data(100_000)
        let handle = Handle(.data, name("range"))
        try await storage.save(handle, data: data)
        for r: Range<Int64> in [0..<1, 0..<100_000, 17..<4113, 99_999..<100_000, 50_000..<50_000] {
            let got = try await storage.load(handle, range: r)
            try expect(got == data.subdata(in: Int(r.lowerBound)..<Int(r.upperBound)), "range \(r) returned other bytes")
        }
        try await expectError(.invalidRange, "range past the end") { _ = try await storage.load(handle, range: 99_000..<100_001) }
        try await storage.remove(handle)
    }

    static let notFound: Case = { storage, _ in
        let handle = Handle(.snapshots, name("missing"))
        try await expectError(.notFound, "load of a missing file") { _ = try await storage.load(handle) }
        try await expectError(.notFound, "ranged load of a missing file") { _ = try await storage.load(handle, range: 0..<1) }
        try await expectError(.notFound, "stat of a missing file") { _ = try await storage.stat(handle) }
        try await expectError(.notFound, "remove of a missing file") { try await storage.remove(handle) }
    }

    static let listing: Case = { storage, harness in
        let prefix = String(name("ls").prefix(59))
        let names = (0..<harness.listCount).map { prefix + String(format: "%05x", $0) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = 0
            func add() {
                guard next < names.count else { return }
                let n = names[next]
                next += 1
                group.addTask { try await storage.save(Handle(.index, n), data: Data(n.utf8)) }
            }
            for _ in 0..<16 { add() }
            while try await group.next() != nil { add() }
        }
        let listed = try await storage.list(.index).filter { $0.name.hasPrefix(prefix) }
        try expect(listed.count == names.count, "listed \(listed.count) of \(names.count) files")
        try expect(Set(listed.map(\.name)) == Set(names), "listing returned other names")
        try expect(listed.allSatisfy { $0.size == Int64($0.name.utf8.count) }, "listing reported wrong sizes")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for chunk in stride(from: 0, to: names.count, by: 100) {
                let slice = names[chunk..<min(chunk + 100, names.count)]
                group.addTask { for n in slice { try await storage.remove(Handle(.index, n)) } }
            }
            try await group.waitForAll()
        }
        try expect(try await storage.list(.index).filter { $0.name.hasPrefix(prefix) }.isEmpty, "files remain after removal")
    }

    static let overwrite: Case = { storage, _ in
        let handle = Handle(.keys, name("ow"))
        let data = Data("same content".utf8)
        try await storage.save(handle, data: data)
        do {
            try await storage.save(handle, data: data)
        } catch let error as StorageError where error.code == .alreadyExists {}
        try expect(try await storage.load(handle) == data, "saving the same file twice changed it")
        try expect(try await storage.list(.keys).filter { $0.name == handle.name }.count == 1, "a file is listed twice")
        try await storage.remove(handle)
    }

    static let typesSeparate: Case = { storage, _ in
        let n = name("sep")
        try await storage.save(Handle(.index, n), data: Data("index".utf8))
        try expect(try await storage.load(Handle(.index, n)) == Data("index".utf8), "index round trip failed")
        for other in [FileType.keys, .snapshots, .data, .locks] {
            try expect(!(try await storage.list(other).contains { $0.name == n }), "an index file shows under \(other.rawValue)")
            try expect(!(try await storage.exists(Handle(other, n))), "an index file exists under \(other.rawValue)")
        }
        try await storage.remove(Handle(.index, n))
    }

    static let concurrentUploads: Case = { storage, _ in
        let items = (0..<24).map { i -> (Handle, Data) in
            var gen = SeededBytes(seed: UInt64(100 + i))
            return (Handle(.data, name("cc")), gen.data(200_000 + i))
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (h, d) in items { group.addTask { try await storage.save(h, data: d) } }
            try await group.waitForAll()
        }
        for (h, d) in items {
            try expect(try await storage.load(h) == d, "concurrent upload of \(h) was damaged")
            try await storage.remove(h)
        }
    }

    static let interruptedUpload: Case = { storage, harness in
        guard let simulate = harness.simulateInterruptedUpload else { return }
        let handle = Handle(.data, name("cut"))
        var gen = SeededBytes(seed: 3)
        try await simulate(handle, gen.data(300_000))
        try expect(!(try await storage.list(.data).contains { $0.name == handle.name }),
                   "an interrupted upload is visible in the listing")
        try await expectError(.notFound, "load of an interrupted upload") { _ = try await storage.load(handle) }
    }

    /// `saveNew` stores a free name, accepts its own bytes again (a retried create), refuses
    /// other bytes with `.alreadyExists` and leaves the file alone; of several creates racing for
    /// one name exactly one succeeds, and the file holds its bytes. The racers retry transient
    /// failures as every real client does (`StorageStack`): a server that writes in place
    /// (rclone) can cut a racer's read-back short, which is transient, and a retried create then
    /// finds the name taken and compares bytes.
    static let createOnly: Case = { storage, _ in
        for handle in [Handle.config, Handle(.snapshots, name("new"))] {
            let first = Data("first \(handle)".utf8)
            try await storage.saveNew(handle, data: first)
            try expect(try await storage.load(handle) == first, "saveNew of a free name stored other bytes (\(handle))")
            try await storage.saveNew(handle, data: first)
            try await expectError(.alreadyExists, "saveNew of a taken name (\(handle))") {
                try await storage.saveNew(handle, data: Data("second \(handle)".utf8))
            }
            try expect(try await storage.load(handle) == first, "a refused saveNew changed the file (\(handle))")
            try await storage.remove(handle)
        }
        let contenders = (0..<4).map { Data("contender \($0) \(name("c"))".utf8) }
        let racing = RetryingStorage(storage, attempts: 3, initialDelay: .milliseconds(50), logger: Logger(label: "conformance"))
        let outcomes = try await withThrowingTaskGroup(of: (Data, Bool).self) { group in
            for data in contenders {
                group.addTask {
                    do {
                        try await racing.saveNew(.config, data: data)
                        return (data, true)
                    } catch let error as StorageError where error.code == .alreadyExists {
                        return (data, false)
                    }
                }
            }
            var all: [(Data, Bool)] = []
            for try await outcome in group { all.append(outcome) }
            return all
        }
        let winners = outcomes.filter(\.1).map(\.0)
        try expect(winners.count == 1, "\(winners.count) of \(contenders.count) racing creates succeeded")
        try expect(try await storage.load(.config) == winners.first, "the file does not hold the winner's bytes")
        try await storage.remove(.config)
    }

    static let invalidNames: Case = { storage, _ in
        for bad in ["../escape", "a/b", ""] {
            do {
                try await storage.save(Handle(.data, bad), data: Data("x".utf8))
                throw ConformanceFailure("saving a file named \"\(bad)\" succeeded")
            } catch is StorageError {}
        }
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for element in self { out.append(try await transform(element)) }
        return out
    }
}

