import Foundation
import Storage
import Testing
import TestSupport

/// Reused staging files (StagingFiles) and packs released from the page cache once on disk.
@Suite struct StagingTests {
    /// A file handed out again holds only the new object's bytes, whatever a longer one left.
    @Test func aReusedFileHoldsOnlyTheNewObject() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let pool = StagingFiles(keep: 2, maximumLength: 64 << 20)
        pool.open()
        defer { pool.close() }
        var gen = SeededBytes(seed: 3)
        var first: StagedFile? = try StagedFile.temporary(in: dir.path, reusing: pool)
        let fd = first!.fd
        try first!.write(gen.data(3 << 20), at: 0)
        #expect(try first!.finish() == 3 << 20)
        first = nil
        #expect(pool.kept == 1)
        let second = try StagedFile.temporary(in: dir.path, reusing: pool)
        #expect(second.fd == fd, "the kept file is reused")
        #expect(pool.kept == 0)
        let small = gen.data(1000)
        try second.write(small.suffix(400), at: 600)
        try second.write(small.prefix(600), at: 0)
        #expect(try second.finish() == 1000)
        #expect(try second.readAll() == small)
        let fresh = try StagedFile.temporary(in: dir.path, reusing: StagingFiles(keep: 0, maximumLength: 0))
        try fresh.write(small, at: 0)
        #expect(try second.sha256() == fresh.sha256())
    }

    /// The descriptors still open on unlinked files in `dir`.
    func openFiles(in dir: TempDir) -> Int {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        let name = "/" + (dir.path as NSString).lastPathComponent + "/"
        return fds.filter { fd in
            ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + fd)) ?? "").contains(name)
        }.count
    }

    /// Nothing is kept outside a use, none past `keep` or `maximumLength`, and the last close
    /// closes what was kept.
    @Test func filesAreKeptOnlyWhileInUse() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let pool = StagingFiles(keep: 2, maximumLength: 1 << 20)
        var unused: StagedFile? = try StagedFile.temporary(in: dir.path, reusing: pool)
        #expect(openFiles(in: dir) == 1)
        unused = nil
        #expect(pool.kept == 0)
        #expect(openFiles(in: dir) == 0, "dropped outside a use: closed")
        pool.open()
        pool.open()
        var files: [StagedFile] = try (0..<4).map { _ in try StagedFile.temporary(in: dir.path, reusing: pool) }
        try files[0].write(Data(count: 2 << 20), at: 0)  // longer than maximumLength: not kept
        files.removeAll()
        #expect(pool.kept == 2)
        #expect(openFiles(in: dir) == 2)
        pool.close()
        #expect(pool.kept == 2, "another use is still open")
        pool.close()
        #expect(pool.kept == 0)
        #expect(openFiles(in: dir) == 0, "kept files stayed open after the last close")
        _ = unused
    }

    /// A local repository's packs leave the page cache once synced; other objects stay cached.
    @Test(.enabled(if: pageCacheIsObservable, "the temporary directory is on tmpfs, whose pages never leave"))
    func localPacksAreReleasedFromThePageCache() async throws {
        let dir = TempDir()
        let pool = BlockingPool(threads: 2)
        defer { pool.shutdown(); dir.remove() }
        let storage = LocalStorage(path: dir.path + "/repo", pool: pool)
        try await storage.create()
        var gen = SeededBytes(seed: 4)
        let pack = String(repeating: "ab", count: 32), index = String(repeating: "cd", count: 32)
        let staged = try storage.makeStagingFile(for: .data)
        try staged.write(gen.data(4 << 20), at: 0)
        try staged.finish()
        try await storage.save(Handle(.data, pack), staged: staged)
        try await storage.save(Handle(.index, index), data: gen.data(4 << 20))
        guard let packed = pageCacheResidency(dir.path + "/repo/data/ab/" + pack),
              let indexed = pageCacheResidency(dir.path + "/repo/index/" + index) else { Issue.record("cannot read the page cache residency"); return }
        #expect(packed.resident == 0, "\(packed.resident) of \(packed.pages) pages of the pack still cached")
        #expect(indexed.resident == indexed.pages)
    }

    /// A pack streamed from a local repository leaves the page cache behind the reader, clean
    /// pages dropped as it goes (a restore reads each pack once); other objects stay cached.
    @Test(.enabled(if: pageCacheIsObservable, "the temporary directory is on tmpfs, whose pages never leave"))
    func streamedPacksLeaveThePageCache() async throws {
        let dir = TempDir()
        let pool = BlockingPool(threads: 2)
        defer { pool.shutdown(); dir.remove() }
        let storage = LocalStorage(path: dir.path + "/repo", pool: pool)
        try await storage.create()
        var gen = SeededBytes(seed: 6)
        let name = String(repeating: "ef", count: 32)
        let (packData, indexData) = (gen.data(9 << 20 + 77), gen.data(2 << 20))
        try await storage.save(Handle(.data, name), data: packData)
        try await storage.save(Handle(.index, name), data: indexData)
        let packPath = dir.path + "/repo/data/ef/" + name, indexPath = dir.path + "/repo/index/" + name
        for path in [packPath, indexPath] { _ = FileManager.default.contents(atPath: path) }  // both cached now
        guard let before = pageCacheResidency(packPath) else { Issue.record("cannot read the page cache residency"); return }
        #expect(before.resident == before.pages, "reading the pack should have cached it")
        for (handle, data) in [(Handle(.data, name), packData), (Handle(.index, name), indexData)] {
            let got = Locked(Data())
            try await storage.stream(handle, range: 0..<Int64(data.count)) { piece in got.withLock { $0.append(contentsOf: piece) } }
            #expect(got.value == data, "\(handle) streamed other bytes")
        }
        guard let pack = pageCacheResidency(packPath), let index = pageCacheResidency(indexPath) else {
            Issue.record("cannot read the page cache residency"); return
        }
        #expect(pack.resident == 0, "\(pack.resident) of \(pack.pages) pages of the streamed pack still cached")
        #expect(index.resident == index.pages)
    }

    /// Until a restore has written `allowance` bytes its files stay the kernel's (nothing is
    /// written back early); the files that complete after that are taken and released.
    @Test(.enabled(if: pageCacheIsObservable, "the temporary directory is on tmpfs, whose pages never leave"))
    func filesWithinTheAllowanceAreLeftToTheKernel() throws {
        let dir = TempDir()
        defer { dir.remove() }
        var gen = SeededBytes(seed: 7)
        func written(_ name: String, _ size: Int) -> Int32 { writtenAndSynced(dir.path + "/" + name, gen.data(size)) }
        let release = CacheRelease(minimum: 1 << 20, window: 64 << 20, allowance: 5 << 20)
        var kept: [Int32] = []
        for k in 0..<2 {
            let fd = written("early\(k)", 2 << 20)
            #expect(!release.take(fd), "early\(k) is within the allowance")
            kept.append(fd)
        }
        let small = written("small", 4096)
        #expect(!release.take(small), "a small file counts towards the allowance but is never taken")
        kept.append(small)
        let late = written("late", 2 << 20)
        #expect(release.take(late), "past the allowance (4 MiB + 4 KiB + 2 MiB > 5 MiB) a file is taken")
        release.finish()
        kept.forEach { close($0) }
        for (name, cached) in [("early0", true), ("early1", true), ("late", false)] {
            guard let r = pageCacheResidency(dir.path + "/" + name) else { Issue.record("cannot read the page cache residency"); return }
            #expect(cached ? r.resident == r.pages : r.resident == 0, "\(name): \(r.resident) of \(r.pages) pages cached")
        }
    }

    /// The allowance is what the kernel leaves dirty itself: dirty_background_bytes when set,
    /// else the ratio of the memory available or of the cgroup's limit, whichever is lower.
    @Test func theAllowanceFollowsTheKernelsBackgroundThreshold() {
        let gib: Int64 = 1 << 30
        #expect(CacheRelease.allowance(backgroundBytes: 300 << 20, backgroundRatio: 10, available: 20 * gib, cgroupLimit: nil) == 300 << 20)
        #expect(CacheRelease.allowance(backgroundBytes: 0, backgroundRatio: 10, available: 20 * gib, cgroupLimit: nil) == 2 * gib)
        #expect(CacheRelease.allowance(backgroundBytes: 0, backgroundRatio: 10, available: 20 * gib, cgroupLimit: gib) == gib / 10)
        #expect(CacheRelease.allowance(backgroundBytes: 0, backgroundRatio: 0, available: 20 * gib, cgroupLimit: nil) == 0)
        #expect(CacheRelease.allowance(backgroundBytes: nil, backgroundRatio: nil, available: 20 * gib, cgroupLimit: nil) == 0,
                "unknown: every file is released")
        #expect(CacheRelease.allowance(backgroundBytes: 0, backgroundRatio: 10, available: nil, cgroupLimit: gib) == 0)
    }

    /// The inputs of the allowance are read from the kernel's own text: MemAvailable from
    /// /proc/meminfo, the memory limit of the cgroup that /proc/self/cgroup names (v2 or v1).
    @Test func theKernelsMemoryFiguresAreParsed() {
        let meminfo = "MemTotal:       24589328 kB\nMemFree:         1048576 kB\nMemAvailable:   20971520 kB\nBuffers:   10 kB\n"
        let kib: Int64 = 20_971_520
        #expect(CacheRelease.memAvailable(meminfo) == kib * 1024)
        #expect(CacheRelease.memAvailable("MemTotal: 1 kB\nMemFree: 1 kB\n") == nil, "a kernel without MemAvailable")
        #expect(CacheRelease.memAvailable("MemAvailable: lots kB\n") == nil)

        let files: [String: Int64] = [
            "/sys/fs/cgroup/kubepods/pod1/memory.max": 512 << 20,
            "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": 256 << 20,
            "/sys/fs/cgroup/memory/unlimited/memory.limit_in_bytes": 9_223_372_036_854_771_712,
            "/sys/fs/cgroup/memory.max": 1 << 30,
        ]
        let read: (String) -> Int64? = { files[$0] }  // "max" reads as no number, as readNumber does
        #expect(CacheRelease.cgroupMemoryLimit("0::/kubepods/pod1\n", read: read) == 512 << 20, "cgroup v2")
        #expect(CacheRelease.cgroupMemoryLimit("0::/\n", read: read) == 1 << 30, "cgroup v2 at the root")
        #expect(CacheRelease.cgroupMemoryLimit("0::/user.slice/no-limit\n", read: read) == nil, "memory.max is \"max\"")
        #expect(CacheRelease.cgroupMemoryLimit("5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n", read: read) == 256 << 20, "cgroup v1")
        #expect(CacheRelease.cgroupMemoryLimit("4:memory:/unlimited\n", read: read) == nil, "v1 writes no limit as a number near Int64.max")
        #expect(CacheRelease.cgroupMemoryLimit("garbage\n\n", read: read) == nil)
    }

    /// CacheRelease takes only regular files of at least `minimum` bytes, holds them until
    /// `window` bytes of later files complete, then drops their pages and closes them.
    @Test(.enabled(if: pageCacheIsObservable, "the temporary directory is on tmpfs, whose pages never leave"))
    func completedFilesAreReleasedBehindAWindow() throws {
        let dir = TempDir()
        defer { dir.remove() }
        var gen = SeededBytes(seed: 5)
        func written(_ name: String, _ size: Int) -> Int32 { writtenAndSynced(dir.path + "/" + name, gen.data(size)) }
        let release = CacheRelease(minimum: 1 << 20, window: 3 << 20, allowance: 0)
        let small = written("small", 4096)
        #expect(!release.take(small), "a file under the minimum stays the caller's")
        close(small)
        let pipe = [Int32](unsafeUninitializedCapacity: 2) { buffer, count in
            count = Glibc.pipe(buffer.baseAddress!) == 0 ? 2 : 0
        }
        #expect(!release.take(pipe[0]), "only regular files are taken")
        pipe.forEach { close($0) }
        for k in 0..<3 { #expect(release.take(written("f\(k)", 2 << 20))) }
        #expect(release.held == 2, "the oldest went once 3 MiB of later files were done")
        #expect(openFiles(in: dir) == 2)
        release.finish()
        #expect(release.held == 0)
        #expect(openFiles(in: dir) == 0, "finish closes what was held")
        for k in 0..<3 {
            guard let cached = pageCacheResidency(dir.path + "/f\(k)") else { Issue.record("cannot read the page cache residency"); return }
            #expect(cached.resident == 0, "f\(k): \(cached.resident) of \(cached.pages) pages still cached")
        }
    }
}

/// An open descriptor of a new file holding `data`, written back (clean pages: the first advice
/// to drop them already does).
private func writtenAndSynced(_ path: String, _ data: Data) -> Int32 {
    let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
    _ = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    fsync(fd)
    return fd
}
