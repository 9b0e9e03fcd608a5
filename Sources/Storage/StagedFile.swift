import COpenSSL
import Foundation

/// An object written to a local file before it is stored (a pack, as a backup fills it), so its
/// bytes never have to sit in memory all at once. A backend hands one out with
/// `makeStagingFile(for:)`: a local repository puts it in its own `tmp/` and renames it into
/// place; every other backend gets an unlinked temporary file that it uploads from.
///
/// Writers call `write(_:at:)` (from any thread, at disjoint offsets), then `finish()`, which
/// records the size; then `Storage.save(_:staged:)` stores it. A
/// staged file that is dropped without being stored leaves nothing behind (its descriptor is
/// closed, its temporary name removed).
public final class StagedFile: Sendable {
    /// The open file, readable and writable.
    public let fd: Int32
    /// Its name, when it has one (inside a local repository's `tmp/`); nil for an unlinked file.
    let path: String?
    private let state = Locked(State())

    struct State {
        var size: Int64?
        var sha256: [UInt8]?
        var moved = false
        /// The end of the furthest write: a reused temporary file may be longer from before.
        var end: Int64 = 0
    }

    /// For a reusable unlinked temporary file: the pool it goes back to and its directory.
    private let reuse: (pool: StagingFiles, directory: String)?

    init(fd: Int32, path: String?, reuse: (pool: StagingFiles, directory: String)? = nil) {
        self.fd = fd
        self.path = path
        self.reuse = reuse
    }

    deinit {
        if let reuse, reuse.pool.give(fd, directory: reuse.directory, length: state.value.end) { return }
        close(fd)
        if let path, !state.value.moved { unlink(path) }
    }

    /// An unlinked file in `directory` (default: the system's temporary directory, `TMPDIR`,
    /// else /tmp): one that a pack of the same backup left for reuse (`StagingFiles`), else a new one.
    public static func temporary(in directory: String? = nil, reusing pool: StagingFiles = .shared) throws -> StagedFile {
        var dir = directory ?? ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        if dir.isEmpty { dir = "/tmp" }
        if let fd = pool.take(directory: dir) { return StagedFile(fd: fd, path: nil, reuse: (pool, dir)) }
        var template = Array((dir + "/chebackup-XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw posixError("create a temporary file in", dir) }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        unlink(String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self))
        return StagedFile(fd: fd, path: nil, reuse: (pool, dir))
    }

    /// Writes all of `bytes` at `offset`.
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws {
        guard writeFully(fd, bytes, at: offset) else { throw posixError("write", path ?? "a temporary file") }
        let end = offset + Int64(bytes.count)
        state.withLock { $0.end = max($0.end, end) }
    }

    public func write(_ data: Data, at offset: Int64) throws {
        try data.withUnsafeBytes { try write($0, at: offset) }
    }

    /// Ends writing: returns the file's size, which `save(_:staged:)` uploads.
    @discardableResult
    public func finish() throws -> Int64 {
        if let size = state.value.size { return size }
        // A reused file keeps what an earlier, longer object left past this one's end.
        if reuse != nil, ftruncate(fd, off_t(state.value.end)) != 0 { throw posixError("truncate", "a temporary file") }
        guard let size = fileSize(fd: fd) else { throw posixError("stat", path ?? "a temporary file") }
        state.withLock { $0.size = size }
        return size
    }

    /// The SHA-256 of the finished file's bytes (read back from the page cache, 1 MiB at a
    /// time), computed once on first use: S3's payload signature and objects named by the hash
    /// of all their bytes need it; a version 2 pack, named from its header, does not.
    public func sha256() throws -> [UInt8] {
        if let digest = state.value.sha256 { return digest }
        let size = try finish()
        // Read back in 1 MiB pieces through one reused buffer: mapping the file instead would
        // count all of it in our resident memory while it is hashed.
        var digest = [UInt8](repeating: 0, count: 32)
        guard let context = chb_sha256_new() else { throw StorageError(.permanent, "OpenSSL could not create a SHA-256 context") }
        defer { chb_sha256_free(context) }
        try readInPieces(fd, 0..<size, what: path ?? "a temporary file") { piece in
            _ = chb_sha256_update(context, piece.baseAddress, piece.count)
        }
        _ = chb_sha256_final(context, &digest)
        state.withLock { $0.sha256 = digest }
        return digest
    }

    /// The size once `finish()` has run.
    public var finishedSize: Int64? { state.value.size }

    /// The whole file, for backends that store from memory.
    public func readAll() throws -> Data {
        let size = try finish()
        return try readExactly(fd, offset: 0, count: Int(size), path: path ?? "a temporary file")
    }

    /// Renames the file to `target` (same file system); afterwards it is no longer removed on drop.
    func move(to target: String) throws {
        guard let path else { throw StorageError(.permanent, "an unnamed staging file cannot be renamed") }
        guard rename(path, target) == 0 else { throw posixError("rename to", target) }
        state.withLock { $0.moved = true }
    }
}

/// Unlinked temporary files kept for reuse while a backup runs: a pack staged in a file another
/// pack has left keeps that file's pages in the page cache and overwrites them, where a new file
/// takes fresh pages for every pack and frees them once uploaded (allocating and freeing 630 MiB
/// of page cache for 1 GiB backed up; docs/benchmarks.md, session 12). Files are kept only while
/// a user holds the pool open (`open()`/`close()`, a `BlobWriter` does), at most `keep` of them
/// and none longer than `maximumLength`; the last `close()` closes every kept file, so an idle
/// agent holds none. Their content is never read again: a file handed out anew is overwritten
/// from the start, and `finish()` cuts it at the end of its own writes.
public final class StagingFiles: Sendable {
    public static let shared = StagingFiles(keep: 8, maximumLength: 64 << 20)
    let keep: Int
    let maximumLength: Int64
    private struct State {
        var users = 0
        var free: [(directory: String, fd: Int32)] = []
    }
    private let state = Locked(State())

    public init(keep: Int, maximumLength: Int64) {
        self.keep = keep
        self.maximumLength = maximumLength
    }

    /// Starts a use: files given back from now until the matching `close()` are kept.
    public func open() { state.withLock { $0.users += 1 } }

    /// Ends a use; the last one closes every kept file.
    public func close() {
        let drop = state.withLock { s -> [Int32] in
            s.users = max(0, s.users - 1)
            guard s.users == 0 else { return [] }
            defer { s.free = [] }
            return s.free.map(\.fd)
        }
        for fd in drop { Glibc.close(fd) }
    }

    /// How many files are kept now (tests).
    public var kept: Int { state.value.free.count }

    func take(directory: String) -> Int32? {
        state.withLock { s in s.free.lastIndex { $0.directory == directory }.map { s.free.remove(at: $0).fd } }
    }

    /// Keeps `fd` (a file of `length` bytes in `directory`) if a use is open and there is room;
    /// false: the caller closes it.
    func give(_ fd: Int32, directory: String, length: Int64) -> Bool {
        guard length <= maximumLength else { return false }
        return state.withLock { s in
            guard s.users > 0, s.free.count < keep else { return false }
            s.free.append((directory, fd))
            return true
        }
    }
}

/// Fixed-capacity buffers kept for reuse, so hot paths (sealing chunks, loading packs) do not map
/// fresh memory, and fault it in page by page, for every object. Only the pages a caller touches
/// become resident; at most `keep` free buffers are held.
public final class BufferPool: Sendable {
    public let capacity: Int
    let keep: Int
    private let free = Locked<[Buffer]>([])

    struct Buffer: @unchecked Sendable {  // owned by one user at a time, guarded by the lock while free
        let raw: UnsafeMutableRawBufferPointer
    }

    public init(capacity: Int, keep: Int) {
        self.capacity = capacity
        self.keep = keep
    }

    deinit {
        for buffer in free.value { buffer.raw.deallocate() }
    }

    /// A buffer of `capacity` bytes, owned by the caller until it calls `give`.
    public func take() -> UnsafeMutableRawBufferPointer {
        free.withLock { $0.popLast() }?.raw ?? .allocate(byteCount: capacity, alignment: 64)
    }

    /// A buffer of at least `count` bytes: a pooled one, or for a rare larger need (a huge tree
    /// blob) a one-off allocation that `give` frees.
    public func take(atLeast count: Int) -> UnsafeMutableRawBufferPointer {
        count <= capacity ? take() : .allocate(byteCount: count, alignment: 64)
    }

    /// Returns a buffer from `take` (kept for reuse, or freed when enough are kept).
    public func give(_ raw: UnsafeMutableRawBufferPointer) {
        guard raw.count == capacity else { return raw.deallocate() }
        let kept = free.withLock { list -> Bool in
            guard list.count < keep else { return false }
            list.append(Buffer(raw: raw))
            return true
        }
        if !kept { raw.deallocate() }
    }

    /// Runs `body` with a buffer of `capacity` bytes (or more, when `atLeast` asks for more),
    /// which goes back to the pool afterwards.
    public func withBuffer<T>(atLeast count: Int = 0, _ body: (UnsafeMutableRawBufferPointer) throws -> T) rethrows -> T {
        let raw = take(atLeast: count)
        defer { give(raw) }
        return try body(raw)
    }

    /// A `Data` of `count` bytes filled by `fill`, backed by a pooled buffer that returns to the
    /// pool when the last copy of the `Data` is released. Larger than `capacity`: a plain `Data`.
    public func data(count: Int, fill: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows -> Data {
        guard count <= capacity, count > 0 else {
            var data = Data(count: count)
            try data.withUnsafeMutableBytes { try fill($0) }
            return data
        }
        let raw = take()
        do {
            try fill(UnsafeMutableRawBufferPointer(rebasing: raw[0..<count]))
        } catch {
            give(raw)
            throw error
        }
        return wrap(raw, count: count)
    }

    /// The first `count` bytes of a buffer from `take()` as a `Data` that gives it back when released.
    func wrap(_ raw: UnsafeMutableRawBufferPointer, count: Int) -> Data {
        guard count > 0 else {
            give(raw)
            return Data()
        }
        let capacity = self.capacity
        return Data(bytesNoCopy: raw.baseAddress!, count: count, deallocator: .custom { [self] pointer, _ in
            give(UnsafeMutableRawBufferPointer(start: pointer, count: capacity))
        })
    }

    /// For whole packs and pack ranges read or downloaded on restore and check: 64 MiB of address
    /// space each (packs are about 16 MiB; only what is used becomes resident).
    public static let objects = BufferPool(capacity: 64 << 20, keep: 4)

    /// For streamed reads: 1 MiB pieces.
    public static let pieces = BufferPool(capacity: 1 << 20, keep: 8)
}
