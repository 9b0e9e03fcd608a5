import Foundation

// Keeping packs and restored files from crowding the page cache. On a VM whose host reclaims
// free guest memory, first touching such memory costs more than the write itself (writing 704
// MiB in 16 MiB files cost 1.5-1.75 s of system time kept cached, 0.23 s released; a 1 GiB
// restore on cold memory 2.35-3.57 s kept, 1.44-2.18 s released; docs/benchmarks.md, session
// 12): pages of data read or written once give way, and the next reads and writes reuse them.
// Packs read once are clean, so dropping them costs nothing; restored files are dirty, and
// dropping them means writing them back during the restore, which the kernel would otherwise
// do later (session 14), so they are left to the kernel up to what it leaves dirty itself.

/// fsyncs `fd` and, when `release` is set, then drops the file's pages from the page cache
/// (posix_fadvise DONTNEED; only clean pages can go, hence after the fsync). For packs, which are
/// written once and seldom read soon. Returns false when the fsync failed (errno set); the
/// advice is only advice.
public func syncFile(_ fd: Int32, releasingCache release: Bool) -> Bool {
    guard fsync(fd) == 0 else { return false }
    if release { _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_DONTNEED)) }
    return true
}

/// Drops the pages of a file read once (a pack) behind its reader, every `step` bytes and as
/// soon as the end of `range` is read: clean pages, so nothing waits for the disk, and the
/// reads and writes that follow reuse them instead of memory not touched yet.
public struct ReadBehind {
    let fd: Int32
    let end: Int64
    let step: Int64
    private var dropped: Int64

    public init(_ fd: Int32, range: Range<Int64>, step: Int64 = 4 << 20) {
        self.fd = fd
        end = range.upperBound
        self.step = step
        dropped = range.lowerBound
    }

    /// The reader has consumed everything before `offset`.
    public mutating func consumed(upTo offset: Int64) {
        if offset - dropped >= step || (offset >= end && offset > dropped) { finish(at: offset) }
    }

    /// The reader stops (at the end, or early), having consumed everything before `offset`.
    public mutating func finish(at offset: Int64) {
        guard offset > dropped else { return }
        _ = posix_fadvise(fd, off_t(dropped), off_t(offset - dropped), Int32(POSIX_FADV_DONTNEED))
        dropped = offset
    }
}

/// Restored files leaving the page cache behind the restore, once it has written more than
/// `allowance` bytes (below that they stay the kernel's, which writes them back later): a
/// completed file's writeback is started (DONTNEED on dirty pages starts it and drops nothing),
/// and once `window` bytes of later files have completed, by when its writeback is mostly done,
/// its clean pages are dropped (DONTNEED again) and it is closed. Only regular files of at least
/// `minimum` bytes are taken: small ones are not worth a descriptor held open. Nothing is
/// promised about durability; a page still dirty or under writeback simply stays cached.
public final class CacheRelease: Sendable {
    let minimum: Int64
    let window: Int64
    let allowance: Int64
    private struct Queue {
        var files: [(fd: Int32, size: Int64)] = []
        var bytes: Int64 = 0
        /// Bytes of every regular file offered so far.
        var offered: Int64 = 0
    }
    private let queue = Locked(Queue())

    public init(minimum: Int64 = 1 << 20, window: Int64 = 64 << 20, allowance: Int64 = CacheRelease.kernelAllowance) {
        self.minimum = minimum
        self.window = window
        self.allowance = allowance
    }

    /// What the kernel leaves dirty before it starts writing back in the background:
    /// vm.dirty_background_bytes, else vm.dirty_background_ratio percent of the memory available
    /// (MemAvailable, or this process's cgroup limit when lower: a container's page cache counts
    /// against it). 0 when it cannot be told: then every qualifying file is released. Read anew
    /// for each restore: a long-running agent's memory changes.
    public static var kernelAllowance: Int64 {
        allowance(backgroundBytes: readNumber("/proc/sys/vm/dirty_background_bytes"),
                  backgroundRatio: readNumber("/proc/sys/vm/dirty_background_ratio"),
                  available: readText("/proc/meminfo").flatMap(memAvailable),
                  cgroupLimit: readText("/proc/self/cgroup").flatMap { cgroupMemoryLimit($0, read: readNumber) })
    }

    public static func allowance(backgroundBytes: Int64?, backgroundRatio: Int64?, available: Int64?, cgroupLimit: Int64?) -> Int64 {
        if let bytes = backgroundBytes, bytes > 0 { return bytes }
        guard let ratio = backgroundRatio, (0...100).contains(ratio), var memory = available else { return 0 }
        if let limit = cgroupLimit { memory = min(memory, limit) }
        return memory * ratio / 100
    }

    /// MemAvailable, in bytes, from the text of /proc/meminfo.
    public static func memAvailable(_ meminfo: String) -> Int64? {
        guard let line = meminfo.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }),
              let kib = Int64(line.split(separator: " ").dropFirst().first ?? "") else { return nil }
        return kib * 1024
    }

    /// The memory limit of the cgroup that the text of /proc/self/cgroup names (v2 memory.max,
    /// else v1 memory.limit_in_bytes, read through `read`); nil when there is none.
    public static func cgroupMemoryLimit(_ selfCgroup: String, read: (String) -> Int64?) -> Int64? {
        for line in selfCgroup.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            let path = fields[2] == "/" ? "" : String(fields[2])
            if fields[0] == "0", fields[1].isEmpty, let limit = read("/sys/fs/cgroup" + path + "/memory.max") { return limit }
            // cgroup v1 writes "no limit" as a number near Int64.max.
            if fields[1].split(separator: ",").contains("memory"), let limit = read("/sys/fs/cgroup/memory" + path + "/memory.limit_in_bytes"),
               limit < Int64.max / 2 { return limit }
        }
        return nil
    }

    deinit { finish() }

    /// Takes over `fd`, a file just written in full, when it qualifies: true, and it is closed
    /// here later; false, and the caller still owns it.
    public func take(_ fd: Int32) -> Bool {
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return false }
        let size = Int64(st.st_size)
        let beyond = queue.withLock { q in
            q.offered += size
            return q.offered > allowance
        }
        guard beyond, size >= minimum else { return false }
        _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_DONTNEED))
        let done = queue.withLock { q -> [Int32] in
            q.files.append((fd, size))
            q.bytes += size
            var out: [Int32] = []
            while q.files.count > 1, q.bytes - q.files[0].size >= window {
                q.bytes -= q.files[0].size
                out.append(q.files.removeFirst().fd)
            }
            return out
        }
        for old in done { drop(old) }
        return true
    }

    /// Drops and closes every file still held (the end of a restore).
    public func finish() {
        let rest = queue.withLock { q -> [Int32] in
            defer { q = Queue() }
            return q.files.map(\.fd)
        }
        for fd in rest { drop(fd) }
    }

    /// Files held now (tests).
    public var held: Int { queue.withLock { $0.files.count } }

    private func drop(_ fd: Int32) {
        _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_DONTNEED))
        close(fd)
    }
}

private func readText(_ path: String) -> String? { try? String(contentsOfFile: path, encoding: .utf8) }

/// A number read from a one-line file (/proc/sys, cgroup files); nil when missing or "max".
private func readNumber(_ path: String) -> Int64? {
    readText(path).flatMap { Int64($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
}
