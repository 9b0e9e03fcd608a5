import Foundation

/// A repository in a local directory, laid out as restic lays out its own:
/// `config`, `keys/`, `locks/`, `snapshots/`, `index/`, `data/XX/` (XX = first two characters of
/// the name), and `tmp/` for writes in progress. A write goes to `tmp/`, is fsynced, then renamed
/// into place, and the directory is fsynced: readers never see half a file.
public struct LocalStorage: Storage {
    public let root: String
    private let pool: BlockingPool

    public init(path: String, pool: BlockingPool) {
        var root = path
        while root.count > 1 && root.hasSuffix("/") { root.removeLast() }
        self.root = root
        self.pool = pool
        removeStaleStagingFiles()
    }

    /// This host's name as staging files carry it (letters, digits, `.`, `_` only).
    public static let host: String = {
        var buffer = [CChar](repeating: 0, count: 256)
        gethostname(&buffer, buffer.count)
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let clean = String(name.unicodeScalars.filter { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "." || $0 == "_") })
        return clean.isEmpty ? "host" : clean
    }()

    /// Staging files are `tmp/<type>-<host>-<pid>-<UUID>`. Those a killed writer left are
    /// removed when a repository is opened: this host's whose process is gone, and anyone's
    /// older than a day (older releases named them `<type>-<UUID>`: those too, once a day old).
    /// A file of a live process, or of another host within the day, is never touched.
    @discardableResult
    public func removeStaleStagingFiles(now: time_t = time(nil)) -> Int {
        let dir = root + "/tmp"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return 0 }
        var removed = 0
        for name in names {
            var st = Foundation.stat()
            guard lstat(dir + "/" + name, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { continue }
            if Self.isStale(name, modified: st.st_mtim.tv_sec, now: now) && unlink(dir + "/" + name) == 0 { removed += 1 }
        }
        return removed
    }

    static func isStale(_ name: String, modified: time_t, now: time_t) -> Bool {
        let old = now - modified > 86_400
        let fields = name.split(separator: "-", maxSplits: 3)
        guard fields.count == 4, let pid = Int32(fields[2]), pid > 0, UUID(uuidString: String(fields[3])) != nil else {
            // An older release's `<type>-<UUID>`, or not ours at all: only by age, and only ours.
            guard let dash = name.firstIndex(of: "-"), UUID(uuidString: String(name[name.index(after: dash)...])) != nil else { return false }
            return old
        }
        if old { return true }
        guard fields[1] == Self.host, pid != getpid() else { return false }
        return kill(pid, 0) != 0 && errno == ESRCH
    }

    public var location: String { "local:\(root)" }
    public var defaultConnections: Int { 2 }

    func path(_ handle: Handle) throws -> String {
        if handle.type == .config { return root + "/config" }
        let name = handle.name
        guard !name.isEmpty, !name.hasPrefix("."), !name.contains("/"), !name.contains("\0") else {
            throw StorageError(.permanent, "invalid file name \"\(name)\"")
        }
        if handle.type == .data {
            return "\(root)/data/\(name.prefix(2))/\(name)"
        }
        return "\(root)/\(handle.type.rawValue)/\(name)"
    }

    public func create() async throws {
        let root = self.root
        try await pool.run {
            var dirs = [root, root + "/tmp"]
            for type in FileType.allCases where type != .config { dirs.append("\(root)/\(type.rawValue)") }
            for byte in 0..<256 { dirs.append(root + "/data/" + String(format: "%02x", byte)) }
            for dir in dirs where mkdir(dir, 0o700) != 0 && errno != EEXIST {
                throw posixError("create directory", dir)
            }
        }
    }

    public func makeStagingFile(for type: FileType) throws -> StagedFile {
        let temp = "\(root)/tmp/\(type.rawValue)-\(Self.host)-\(getpid())-\(UUID().uuidString)"
        var fd = open(temp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        // A repository another program made (a REST server's directory) may have no tmp/ yet.
        if fd < 0 && errno == ENOENT && mkdir(root + "/tmp", 0o700) == 0 {
            fd = open(temp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        }
        guard fd >= 0 else { throw posixError("create", temp) }
        return StagedFile(fd: fd, path: temp)
    }

    public func save(_ handle: Handle, data: Data) async throws {
        let staged = try makeStagingFile(for: handle.type)
        try await pool.run { try staged.write(data, at: 0) }
        try await save(handle, staged: staged)
    }

    /// Written to `tmp/`, fsynced, then linked under its name: link(2) fails when the name
    /// exists, so checking and placing are one step, also between processes.
    public func saveNew(_ handle: Handle, data: Data) async throws {
        let target = try path(handle)
        let staged = try makeStagingFile(for: handle.type)
        guard let temp = staged.path else { throw StorageError(.permanent, "create \(handle): the staging file has no name") }
        let taken = try await pool.run { () throws -> Bool in
            try staged.write(data, at: 0)
            guard syncFile(staged.fd, releasingCache: handle.type == .data) else { throw posixError("fsync", temp) }
            let dir = (target as NSString).deletingLastPathComponent
            if handle.type == .data, mkdir(dir, 0o700) != 0, errno != EEXIST {
                throw posixError("create directory", dir)
            }
            guard link(temp, target) == 0 else {
                if errno == EEXIST { return true }
                throw posixError("create", handle.description)
            }
            let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if dfd >= 0 {
                fsync(dfd)
                close(dfd)
            }
            return false
        }
        // The temporary name goes with `staged`.
        if taken { try await existing(handle, matches: data) }
    }

    /// fsync, rename into place, fsync the directory. A file staged elsewhere is copied in.
    public func save(_ handle: Handle, staged: StagedFile) async throws {
        let target = try path(handle)
        guard let temp = staged.path, temp.hasPrefix(root + "/tmp/") else {
            return try await save(handle, data: staged.readAll())
        }
        try await pool.run {
            guard syncFile(staged.fd, releasingCache: handle.type == .data) else { throw posixError("fsync", temp) }
            let dir = (target as NSString).deletingLastPathComponent
            if handle.type == .data, mkdir(dir, 0o700) != 0, errno != EEXIST {
                throw posixError("create directory", dir)
            }
            try staged.move(to: target)
            let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if dfd >= 0 {
                fsync(dfd)
                close(dfd)
            }
        }
    }

    public func load(_ handle: Handle, range: Range<Int64>?) async throws -> Data {
        try await reading(handle, range) { fd, wanted in
            try readExactly(fd, offset: wanted.lowerBound, count: Int(wanted.count), path: handle.description,
                            pool: wanted.count >= 1 << 20 ? .objects : nil)
        }
    }

    /// Reads the range in 1 MiB pieces into one reused buffer. A pack's pages leave the page
    /// cache behind the reader (ReadBehind): packs are streamed to be restored or checked, once.
    public func stream(_ handle: Handle, range: Range<Int64>, to consume: @escaping ByteConsumer) async throws {
        try await reading(handle, range) { fd, wanted in
            try readInPieces(fd, wanted, what: handle.description, releasingCache: handle.type == .data, to: consume)
        }
    }

    /// Opens `handle` on the pool's threads, checks that `range` (nil: the whole file) lies in
    /// it, and runs `body` with the descriptor and the range.
    private func reading<T: Sendable>(_ handle: Handle, _ range: Range<Int64>?,
                                      _ body: @escaping @Sendable (Int32, Range<Int64>) throws -> T) async throws -> T {
        let file = try path(handle)
        return try await pool.run {
            let fd = open(file, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw posixError("open", handle.description) }
            defer { close(fd) }
            guard let size = fileSize(fd: fd) else { throw posixError("stat", handle.description) }
            let wanted = range ?? 0..<size
            guard wanted.lowerBound >= 0, wanted.upperBound <= size else {
                throw StorageError(.invalidRange, "range \(wanted) outside \(handle) (\(size) bytes)")
            }
            return try body(fd, wanted)
        }
    }

    public func stat(_ handle: Handle) async throws -> FileInfo {
        let file = try path(handle)
        return try await pool.run {
            guard let (size, _) = fileStatus(file) else { throw posixError("stat", handle.description) }
            return FileInfo(name: handle.name, size: size)
        }
    }

    public func list(_ type: FileType) async throws -> [FileInfo] {
        let root = self.root
        return try await pool.run {
            if type == .config {
                return fileStatus(root + "/config").map { [FileInfo(name: "", size: $0.size)] } ?? []
            }
            let base = "\(root)/\(type.rawValue)"
            var dirs = [base]
            if type == .data { dirs = try listDirectory(base).filter { !$0.hasPrefix(".") }.map { base + "/" + $0 } }
            var result: [FileInfo] = []
            for dir in dirs {
                for name in try listDirectory(dir) where !name.hasPrefix(".") {
                    guard let (size, regular) = fileStatus(dir + "/" + name) else { continue }  // removed meanwhile
                    if regular { result.append(FileInfo(name: name, size: size)) }
                }
            }
            return result
        }
    }

    public func remove(_ handle: Handle) async throws {
        let file = try path(handle)
        try await pool.run {
            guard unlink(file) == 0 else { throw posixError("remove", handle.description) }
        }
    }
}

/// Size and whether it is a regular file; nil when `path` does not exist.
func fileStatus(_ path: String) -> (size: Int64, regular: Bool)? {
    var st = stat()
    guard stat(path, &st) == 0 else { return nil }
    return (Int64(st.st_size), (st.st_mode & S_IFMT) == S_IFREG)
}

func fileSize(fd: Int32) -> Int64? {
    var st = stat()
    guard fstat(fd, &st) == 0 else { return nil }
    return Int64(st.st_size)
}

func listDirectory(_ dir: String) throws -> [String] {
    guard let handle = opendir(dir) else {
        if errno == ENOENT { return [] }
        throw posixError("list", dir)
    }
    defer { closedir(handle) }
    var names: [String] = []
    while let entry = readdir(handle) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}

/// Writes all of `data` to `fd`, retrying short writes and EINTR.
public func writeAll(_ fd: Int32, _ data: Data, path: String) throws {
    try data.withUnsafeBytes { raw in
        guard var pointer = raw.baseAddress else { return }
        var left = raw.count
        while left > 0 {
            let n = write(fd, pointer, left)
            if n < 0 {
                if errno == EINTR { continue }
                throw posixError("write", path)
            }
            pointer += n
            left -= n
        }
    }
}

/// Writes all of `bytes` at `offset` (pwrite), retrying short writes and EINTR; false, with
/// `errno` set, when a write fails.
public func writeFully(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int64) -> Bool {
    guard var pointer = bytes.baseAddress else { return true }
    var left = bytes.count
    var at = off_t(offset)
    while left > 0 {
        let n = pwrite(fd, pointer, left, at)
        if n < 0 {
            if errno == EINTR { continue }
            return false
        }
        pointer += n
        left -= n
        at += off_t(n)
    }
    return true
}

/// Reads `range` of `fd` in 1 MiB pieces through one pooled buffer, handing each to `body`; a
/// file that ends before the range does is an `.invalidRange` error.
func readInPieces(_ fd: Int32, _ range: Range<Int64>, what: String, releasingCache release: Bool = false,
                  to body: (UnsafeRawBufferPointer) throws -> Void) throws {
    try BufferPool.pieces.withBuffer { buffer in
        var at = range.lowerBound
        var behind = release ? ReadBehind(fd, range: range) : nil
        defer { behind?.finish(at: at) }
        while at < range.upperBound {
            let n = pread(fd, buffer.baseAddress!, Int(min(Int64(buffer.count), range.upperBound - at)), off_t(at))
            if n < 0 {
                if errno == EINTR { continue }
                throw posixError("read", what)
            }
            if n == 0 { throw StorageError(.invalidRange, "\(what) ended at \(at) bytes, before \(range.upperBound)") }
            try body(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            at += Int64(n)
            behind?.consumed(upTo: at)
        }
    }
}

/// Reads exactly `count` bytes at `offset`; a short file is an error, not a short result.
/// With `pool`, the bytes land in one of its reusable buffers.
public func readExactly(_ fd: Int32, offset: Int64, count: Int, path: String, pool: BufferPool? = nil) throws -> Data {
    func fill(_ raw: UnsafeMutableRawBufferPointer) throws {
        guard let base = raw.baseAddress else { return }
        var done = 0
        while done < count {
            let n = pread(fd, base + done, count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw posixError("read", path)
            }
            if n == 0 { throw StorageError(.permanent, "read \(path): file is shorter than expected") }
            done += n
        }
    }
    if let pool { return try pool.data(count: count, fill: fill) }
    var data = Data(count: count)
    try data.withUnsafeMutableBytes { try fill($0) }
    return data
}
