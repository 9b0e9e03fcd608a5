import Foundation

// Keeping written files out of the page cache. On a VM whose host reclaims free guest memory,
// first touching such memory costs more than the write itself (writing 704 MiB in 16 MiB files
// cost 1.5-1.75 s of system time kept cached, 0.23 s released; a 1 GiB restore on cold memory
// 2.35-3.57 s kept, 1.44-2.18 s released; docs/benchmarks.md, session 12): files written once
// and not read soon give their pages back, and the next file reuses them.

/// fsyncs `fd` and, when `release` is set, then drops the file's pages from the page cache
/// (posix_fadvise DONTNEED; only clean pages can go, hence after the fsync). For packs, which are
/// written once and seldom read soon. Returns false when the fsync failed (errno set); the
/// advice is only advice.
public func syncFile(_ fd: Int32, releasingCache release: Bool) -> Bool {
    guard fsync(fd) == 0 else { return false }
    if release { _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_DONTNEED)) }
    return true
}

/// Restored files leaving the page cache behind the restore, without waiting for the disk: a
/// completed file's writeback is started (DONTNEED on dirty pages starts it and drops nothing),
/// and once `window` bytes of later files have completed, by when its writeback is mostly done,
/// its clean pages are dropped (DONTNEED again) and it is closed. Only regular files of at least
/// `minimum` bytes are taken: small ones are not worth a descriptor held open. Nothing is
/// promised about durability; a page still dirty or under writeback simply stays cached.
public final class CacheRelease: Sendable {
    let minimum: Int64
    let window: Int64
    private struct Queue {
        var files: [(fd: Int32, size: Int64)] = []
        var bytes: Int64 = 0
    }
    private let queue = Locked(Queue())

    public init(minimum: Int64 = 1 << 20, window: Int64 = 64 << 20) {
        self.minimum = minimum
        self.window = window
    }

    deinit { finish() }

    /// Takes over `fd`, a file just written in full, when it qualifies: true, and it is closed
    /// here later; false, and the caller still owns it.
    public func take(_ fd: Int32) -> Bool {
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, Int64(st.st_size) >= minimum else { return false }
        _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_DONTNEED))
        let done = queue.withLock { q -> [Int32] in
            q.files.append((fd, Int64(st.st_size)))
            q.bytes += Int64(st.st_size)
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
