import Foundation
import Logging
import Storage
import Synchronization
import Testing
import TestSupport

enum Backend: String, CaseIterable, CustomTestStringConvertible {
    case memory, local
    var testDescription: String { rawValue }
}

/// A backend of each kind, with its harness, created empty.
func makeBackend(_ kind: Backend) async throws -> (any Storage, StorageConformance.Harness, @Sendable () -> Void) {
    switch kind {
    case .memory:
        return (MemoryStorage(), .init(), {})
    case .local:
        let dir = TempDir()
        let pool = BlockingPool(threads: 4)
        let storage = LocalStorage(path: dir.path + "/repo", pool: pool)
        try await storage.create()
        let harness = StorageConformance.Harness(simulateInterruptedUpload: { handle, data in
            // What a writer killed mid-upload leaves: a partial temporary file, never the final name.
            let partial = "\(dir.path)/repo/tmp/\(handle.type.rawValue)-interrupted"
            try data.prefix(data.count / 2).write(to: URL(fileURLWithPath: partial))
        })
        return (storage, harness, { pool.shutdown(); dir.remove() })
    }
}

@Suite struct ConformanceTests {
    @Test(arguments: Backend.allCases, StorageConformance.cases.map(\.name))
    func conformance(backend: Backend, caseName: String) async throws {
        let (storage, harness, cleanup) = try await makeBackend(backend)
        defer { cleanup() }
        let run = StorageConformance.cases.first { $0.name == caseName }!.run
        try await run(storage, harness)
    }

    @Test func composedStackPassesTheSuite() async throws {
        let (base, harness, cleanup) = try await makeBackend(.local)
        defer { cleanup() }
        let stack = StorageStack.compose(base, connections: 3, logger: Logger(label: "test"))
        for (_, run) in StorageConformance.cases { try await run(stack, harness) }
    }

    @Test func localFilesLandInTheirDirectories() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let pool = BlockingPool(threads: 2)
        defer { pool.shutdown() }
        let storage = LocalStorage(path: dir.path, pool: pool)
        try await storage.create()
        try await storage.save(Handle(.data, "abcdef"), data: Data("x".utf8))
        try await storage.save(Handle(.snapshots, "0123"), data: Data("y".utf8))
        #expect(FileManager.default.fileExists(atPath: dir.path + "/data/ab/abcdef"))
        #expect(FileManager.default.fileExists(atPath: dir.path + "/snapshots/0123"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path + "/tmp").isEmpty)
    }
}

/// A create-only write whose read-back a racing writer cut short (rclone writes files in place;
/// CI once failed "create config … transfer closed with 76 bytes remaining" there): the attempt
/// fails transiently, and the retry every client makes (`RetryingStorage`, in `StorageStack`)
/// finds the name taken and compares bytes. A failure that persists still fails, and other
/// bytes are a lost race at once.
@Suite struct RetriedCreateTests {
    /// Stores like `MemoryStorage`, then fails the first `cuts` creates after storing.
    final class CutReadBack: Storage {
        let base = MemoryStorage()
        let cuts: Int
        let creates = Mutex(0)
        init(cuts: Int) { self.cuts = cuts }
        var location: String { "cut:" }
        var defaultConnections: Int { 1 }
        func create() async throws {}
        func saveNew(_ handle: Handle, data: Data) async throws {
            try await base.saveNew(handle, data: data)
            let n = creates.withLock { c -> Int in c += 1; return c }
            if n <= cuts { throw StorageError(.transient, "transfer closed with 76 bytes remaining") }
        }
        func save(_ handle: Handle, data: Data) async throws { try await base.save(handle, data: data) }
        func load(_ handle: Handle, range: Range<Int64>?) async throws -> Data { try await base.load(handle, range: range) }
        func stat(_ handle: Handle) async throws -> FileInfo { try await base.stat(handle) }
        func list(_ type: FileType) async throws -> [FileInfo] { try await base.list(type) }
        func remove(_ handle: Handle) async throws { try await base.remove(handle) }
    }

    func retrying(_ storage: CutReadBack, attempts: Int = 6) -> RetryingStorage {
        RetryingStorage(storage, attempts: attempts, initialDelay: .milliseconds(1), logger: Logger(label: "test"))
    }

    @Test func aCutReadBackIsRetriedAndFindsItsOwnBytes() async throws {
        let storage = CutReadBack(cuts: 2)
        let data = Data("ours".utf8)
        try await retrying(storage).saveNew(.config, data: data)
        #expect(storage.creates.withLock { $0 } == 3, "two cut attempts, then one that confirms")
        #expect(try await storage.base.load(.config) == data)
    }

    @Test func aFailureThatPersistsFails() async throws {
        let storage = CutReadBack(cuts: 100)
        await #expect(throws: StorageError.self) { try await retrying(storage, attempts: 3).saveNew(.config, data: Data("ours".utf8)) }
        #expect(storage.creates.withLock { $0 } == 3)
    }

    @Test func otherBytesAreALostRaceAtOnce() async throws {
        let storage = CutReadBack(cuts: 0)
        try await storage.base.save(.config, data: Data("theirs".utf8))
        do {
            try await retrying(storage).saveNew(.config, data: Data("ours".utf8))
            Issue.record("another writer's bytes were confirmed as ours")
        } catch let error as StorageError {
            #expect(error.code == .alreadyExists, "\(error)")
        }
        #expect(try await storage.base.load(.config) == Data("theirs".utf8))
    }
}

/// A backend that fails the first `failures` calls with `code`, counting calls and concurrency.
final class FlakyStorage: Storage {
    let base = MemoryStorage()
    let failures: Int
    let code: StorageError.Code
    let calls = Mutex(0)
    let active = Mutex((now: 0, peak: 0))

    init(failures: Int, code: StorageError.Code) {
        self.failures = failures
        self.code = code
    }

    var location: String { "flaky:" }
    var defaultConnections: Int { 2 }
    func create() async throws {}

    func track<T>(_ body: () async throws -> T) async throws -> T {
        active.withLock { $0.now += 1; $0.peak = max($0.peak, $0.now) }
        defer { active.withLock { $0.now -= 1 } }
        let n = calls.withLock { c -> Int in c += 1; return c }
        try await Task.sleep(for: .milliseconds(5))
        if n <= failures { throw StorageError(code, "simulated failure \(n)") }
        return try await body()
    }

    func save(_ handle: Handle, data: Data) async throws { try await track { try await base.save(handle, data: data) } }
    func saveNew(_ handle: Handle, data: Data) async throws { try await track { try await base.saveNew(handle, data: data) } }
    func load(_ handle: Handle, range: Range<Int64>?) async throws -> Data { try await track { try await base.load(handle, range: range) } }
    func stat(_ handle: Handle) async throws -> FileInfo { try await track { try await base.stat(handle) } }
    func list(_ type: FileType) async throws -> [FileInfo] { try await track { try await base.list(type) } }
    func remove(_ handle: Handle) async throws { try await track { try await base.remove(handle) } }
}

/// Streams at most `breakAfter` bytes per call, then fails with a transient error (a dropped
/// connection mid-download).
final class BreakingStreamStorage: Storage {
    let base = MemoryStorage()
    let breakAfter: Int
    let calls = Mutex(0)

    init(breakAfter: Int) { self.breakAfter = breakAfter }

    var location: String { "breaking:" }
    var defaultConnections: Int { 1 }
    func create() async throws {}
    func save(_ handle: Handle, data: Data) async throws { try await base.save(handle, data: data) }
    func saveNew(_ handle: Handle, data: Data) async throws { try await base.saveNew(handle, data: data) }
    func load(_ handle: Handle, range: Range<Int64>?) async throws -> Data { try await base.load(handle, range: range) }
    func stat(_ handle: Handle) async throws -> FileInfo { try await base.stat(handle) }
    func list(_ type: FileType) async throws -> [FileInfo] { try await base.list(type) }
    func remove(_ handle: Handle) async throws { try await base.remove(handle) }

    func stream(_ handle: Handle, range: Range<Int64>, to consume: @escaping ByteConsumer) async throws {
        calls.withLock { $0 += 1 }
        let data = try await base.load(handle, range: range)
        try data.prefix(breakAfter).withUnsafeBytes { try consume($0) }
        if data.count > breakAfter { throw StorageError(.transient, "connection reset mid-download") }
    }
}

@Suite struct WrapperTests {
    let logger = Logger(label: "test")

    @Test func transientFailuresAreRetried() async throws {
        let flaky = FlakyStorage(failures: 3, code: .transient)
        let storage = RetryingStorage(flaky, attempts: 5, initialDelay: .milliseconds(1), logger: logger)
        try await storage.save(Handle(.data, "a"), data: Data("x".utf8))
        #expect(flaky.calls.withLock { $0 } == 4)
        #expect(try await flaky.base.load(Handle(.data, "a")) == Data("x".utf8))
    }

    @Test func permanentFailuresAreNotRetried() async throws {
        for code in [StorageError.Code.notFound, .accessDenied, .invalidRange, .permanent] {
            let flaky = FlakyStorage(failures: 1, code: code)
            let storage = RetryingStorage(flaky, attempts: 5, initialDelay: .milliseconds(1), logger: logger)
            await #expect(throws: StorageError.self) { try await storage.save(Handle(.data, "a"), data: Data()) }
            #expect(flaky.calls.withLock { $0 } == 1, "\(code) was retried")
        }
    }

    @Test func retriesGiveUpWithAClearError() async throws {
        let flaky = FlakyStorage(failures: 100, code: .transient)
        let storage = RetryingStorage(flaky, attempts: 3, initialDelay: .milliseconds(1), logger: logger)
        do {
            try await storage.save(Handle(.data, "a"), data: Data())
            Issue.record("expected a failure")
        } catch let error as StorageError {
            #expect(error.message.contains("after 3 attempts"))
            #expect(flaky.calls.withLock { $0 } == 3)
        }
    }

    /// Streams `range` of `size` seeded bytes through retries from a backend whose streams break
    /// after `breakAfter` bytes: the bytes expected, the bytes received, and the backend's calls.
    func streamThroughBreaks(breakAfter: Int, attempts: Int, size: Int, range: Range<Int64>,
                             seed: UInt64) async throws -> (expected: Data, got: Data, calls: Int) {
        let breaking = BreakingStreamStorage(breakAfter: breakAfter)
        let storage = RetryingStorage(breaking, attempts: attempts, initialDelay: .milliseconds(1), logger: logger)
        var gen = SeededBytes(seed: seed)
        let data = gen.data(size)
        try await breaking.base.save(Handle(.data, "a"), data: data)
        let got = Locked(Data())
        try await storage.stream(Handle(.data, "a"), range: range) { piece in got.withLock { $0.append(contentsOf: piece) } }
        return (data.subdata(in: Int(range.lowerBound)..<Int(range.upperBound)), got.value, breaking.calls.withLock { $0 })
    }

    /// A stream that breaks off mid-way is resumed where it stopped: the consumer sees every byte
    /// once, in order.
    @Test func brokenStreamsResume() async throws {
        let run = try await streamThroughBreaks(breakAfter: 100_000, attempts: 5, size: 350_000, range: 5..<349_000, seed: 3)
        #expect(run.got == run.expected)
        #expect(run.calls == 4, "three breaks, four calls")
    }

    @Test func aStreamThatKeepsProgressingIsNotCutOffByTheAttemptLimit() async throws {
        let run = try await streamThroughBreaks(breakAfter: 50_000, attempts: 2, size: 300_000, range: 0..<300_000, seed: 4)
        #expect(run.got == run.expected)
        #expect(run.calls == 6, "five breaks, each after progress, within two attempts")
        // Without progress the limit holds.
        let stuck = BreakingStreamStorage(breakAfter: 0)
        try await stuck.base.save(Handle(.data, "a"), data: run.expected)
        let limited = RetryingStorage(stuck, attempts: 3, initialDelay: .milliseconds(1), logger: logger)
        await #expect(throws: StorageError.self) { try await limited.stream(Handle(.data, "a"), range: 0..<10) { _ in } }
        #expect(stuck.calls.withLock { $0 } == 3)
    }

    @Test func anErrorFromTheConsumerIsNotRetried() async throws {
        let breaking = BreakingStreamStorage(breakAfter: 1_000_000)
        let storage = RetryingStorage(breaking, attempts: 5, initialDelay: .milliseconds(1), logger: logger)
        try await breaking.base.save(Handle(.data, "a"), data: Data(count: 1000))
        let error = await #expect(throws: StorageError.self) {
            try await storage.stream(Handle(.data, "a"), range: 0..<1000) { _ in throw StorageError(.transient, "disk full while writing") }
        }
        #expect(error?.message == "disk full while writing", "the consumer's own error, unchanged")
        #expect(breaking.calls.withLock { $0 } == 1)
    }

    @Test func concurrencyIsLimited() async throws {
        let flaky = FlakyStorage(failures: 0, code: .transient)
        let storage = LimitedStorage(flaky, connections: 3)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<20 { group.addTask { try await storage.save(Handle(.data, "f\(i)"), data: Data()) } }
            try await group.waitForAll()
        }
        let peak = flaky.active.withLock { $0.peak }
        #expect(peak <= 3 && peak >= 2, "peak concurrency \(peak)")
    }
}

@Suite struct RepositoryURLTests {
    @Test func parsesLocalForms() throws {
        #expect(try RepositoryURL.parse("local:/srv/backup") == .local(path: "/srv/backup"))
        #expect(try RepositoryURL.parse("/srv/backup") == .local(path: "/srv/backup"))
        #expect(try RepositoryURL.parse("relative").description.hasSuffix("/relative"))
    }

    @Test func parsesRemoteForms() throws {
        guard case .rest(let r1) = try RepositoryURL.parse("rest:http://127.0.0.1:8000/che/repo") else { Issue.record("rest"); return }
        #expect(r1.scheme == "http" && r1.host == "127.0.0.1" && r1.port == 8000 && r1.path == "che/repo" && r1.username == nil)
        guard case .rest(let r2) = try RepositoryURL.parse("rest:backup.example.com:1234/che") else { Issue.record("rest short"); return }
        #expect(r2.scheme == "https" && r2.port == 1234 && r2.path == "che")
        guard case .s3(let s1) = try RepositoryURL.parse("s3:s3.amazonaws.com/bucket/some/prefix") else { Issue.record("s3"); return }
        #expect(s1.scheme == "https" && s1.port == 443 && s1.bucket == "bucket" && s1.prefix == "some/prefix")
        guard case .s3(let s2) = try RepositoryURL.parse("s3:http://127.0.0.1:9000/b") else { Issue.record("s3 http"); return }
        #expect(s2.scheme == "http" && s2.port == 9000 && s2.bucket == "b" && s2.prefix.isEmpty)
        guard case .sftp(let f1) = try RepositoryURL.parse("sftp:che@host:/srv/backup") else { Issue.record("sftp"); return }
        #expect(f1.user == "che" && f1.host == "host" && f1.port == 22 && f1.path == "/srv/backup")
        guard case .sftp(let f2) = try RepositoryURL.parse("sftp:che@host:2222//srv/backup") else { Issue.record("sftp port"); return }
        #expect(f2.port == 2222 && f2.path == "/srv/backup")
        guard case .sftp(let f3) = try RepositoryURL.parse("sftp:che@host:backups/che") else { Issue.record("sftp rel"); return }
        #expect(f3.port == 22 && f3.path == "backups/che")
    }

    @Test func refusesWhatItCannotServe() {
        #expect(throws: RepositoryURL.ParseError.self) { try RepositoryURL.parse("") }
        #expect(throws: RepositoryURL.ParseError.self) { try RepositoryURL.parse("local:") }
        #expect(throws: RepositoryURL.ParseError.self) { try RepositoryURL.parse("ftp:host/x") }
        #expect(throws: RepositoryURL.ParseError.self) { try RepositoryURL.parse("s3:onlyhost") }
        #expect(throws: RepositoryURL.ParseError.self) { try RepositoryURL.parse("rest:host:99999/x") }
    }
}

/// Staging files a killed writer left in a local repository's `tmp/` (issue 11, item 23: 27
/// killed backups left 536 MiB there) go when the repository is next opened; nothing a live
/// writer or another host may still use does.
@Suite struct StaleStagingFileTests {
    @Test func killedWritersLeftoversGoAndLiveOnesStay() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let pool = BlockingPool(threads: 1)
        let root = dir.file("repo")
        try FileManager.default.createDirectory(atPath: root + "/tmp", withIntermediateDirectories: true)
        let dead = Process()
        dead.executableURL = URL(fileURLWithPath: "/bin/true")
        try dead.run()
        dead.waitUntilExit()
        let host = LocalStorage.host
        let uuid = { UUID().uuidString }
        let files: [(String, Bool, Bool)] = [  // name, two days old, expected to go
            ("data-\(host)-\(dead.processIdentifier)-\(uuid())", false, true),    // this host, process gone
            ("data-\(host)-\(getppid())-\(uuid())", false, false),               // this host, process alive
            ("data-\(host)-\(getpid())-\(uuid())", false, false),                // this very process
            ("data-otherhost-\(dead.processIdentifier)-\(uuid())", false, false), // another host, within the day
            ("data-otherhost-12345-\(uuid())", true, true),                       // another host, a day old
            ("index-\(uuid())", false, false),                                    // an older release's, fresh
            ("index-\(uuid())", true, true),                                      // an older release's, old
            ("notes.txt", true, false),                                           // not ours
        ]
        for (name, old, _) in files {
            let path = root + "/tmp/" + name
            #expect(FileManager.default.createFile(atPath: path, contents: Data(repeating: 1, count: 1000)))
            if old {
                var times = [timespec(tv_sec: time(nil) - 2 * 86_400, tv_nsec: 0), timespec(tv_sec: time(nil) - 2 * 86_400, tv_nsec: 0)]
                #expect(utimensat(AT_FDCWD, path, &times, 0) == 0)
            }
        }
        _ = LocalStorage(path: root, pool: pool)
        for (name, _, goes) in files {
            #expect(FileManager.default.fileExists(atPath: root + "/tmp/" + name) == !goes, "\(name) should \(goes ? "" : "not ")be removed")
        }
    }
}
