import Foundation
import Storage
import Synchronization

public struct RestoreOptions: Sendable {
    /// Packs downloaded at once.
    public var connections = 4
    /// Remove files and directories in the target that the snapshot does not hold.
    public var deleteExtraneous = false
    /// Recompute every blob's id from its plaintext, also for blobs of whole packs (which are
    /// otherwise covered by their AES-GCM tag and the pack's SHA-256): what `check --read-data`
    /// does, at one more SHA-256 pass over the restored bytes.
    public var verifyIDs = false
    /// Files (and chunks) planned before they are written: past this many the walk hands them
    /// over in batches, so memory is bounded (about 120 bytes a file and chunk: some 250 MiB at
    /// most), at the cost of reading again the packs that two batches share. Backup writes
    /// several directories at once, so one pack holds files from all over the walk: batches
    /// much smaller than the snapshot would read each pack many times.
    public var batchFiles = 1 << 20
    public var batchBlobs = 1 << 21
    public init() {}
}

public struct RestoreStats: Sendable, Equatable {
    public var files = 0
    public var dirs = 0
    public var bytes: Int64 = 0
    public var packs = 0
}

/// Writes snapshot parts back: trees into directories (downloading each needed pack once, several
/// at a time, writing its blobs wherever they belong), streams to a file descriptor in order.
public final class Restorer: Sendable {
    let repo: Repository
    let options: RestoreOptions
    let progress: ProgressCounters

    public init(repository: Repository, options: RestoreOptions = .init(), progress: ProgressCounters = ProgressCounters()) {
        repo = repository
        self.options = options
        self.progress = progress
    }

    /// A file to write: its directory (an index into the walk's directories), its name and what
    /// goes back on it at the end. About 50 bytes: the walk keeps one per file until its batch is
    /// written, so a whole node (name, chunk list, device, inode) is not kept.
    struct FileJob: Sendable {
        let dir: Int32
        let name: String
        let metadata: FS.Metadata
    }

    /// One chunk to write into one file: a pack's blob, the file, and where in it.
    struct Use: Sendable {
        let blob: PackedBlob
        let file: Int32
        let offset: Int64
    }

    /// The files of a batch and, for each pack, the chunks to take from it.
    struct Plan: Sendable {
        var files: [FileJob] = []
        /// How many chunks each file still waits for.
        var writes: [Int32] = []
        var packs: [PackID: [Use]] = [:]
        var uses = 0
    }

    struct Target {
        let file: Int
        let offset: Int64
    }

    /// A directory the walk made: where, and what goes back on it at the end (nothing for the
    /// target a single file is restored into).
    struct Dir: Sendable {
        let path: String
        let metadata: FS.Metadata?
    }

    /// A directory being walked: its index, its entries, and the next entry to visit.
    private struct Frame {
        let dir: Int32
        let nodes: [Node]
        var next = 0
    }

    /// Restores a tree part: a directory root's contents go into `target`; a file or symlink root
    /// becomes `target/<name>`. A `target` that exists must be a directory; whether it may hold
    /// files already is the caller's rule (see `checkTarget`).
    ///
    /// The tree is walked depth first, each tree read when its directory is reached (its pack
    /// loaded whole the first time, see `walkTree`) and dropped when the walk leaves it;
    /// directories and symlinks are made as the walk goes. Each file's chunks are looked up as
    /// it is reached and filed under their packs, and then each pack is read once, several at
    /// a time, its chunks written wherever they belong. A snapshot of more than `batchFiles`
    /// files (or `batchBlobs` chunks) is written in batches, one while the walk plans the next,
    /// so memory stays bounded (a pack wanted by two batches is then read twice). Directories
    /// get their metadata last, once nothing more is created in them.
    public func restoreTree(_ part: Part, into target: String) async throws -> RestoreStats {
        guard part.kind == .tree else {
            throw RepositoryError(.invalidArgument, "part \(part.name) is a stream: restore it to a file or --stdout")
        }
        try Self.refuseNonDirectory(target)
        try FS.makeDirectories(target)
        if part.stats.bytes > 0 { progress.setTotal(part.stats.bytes) }
        var stats = RestoreStats()
        var dirs: [Dir] = []
        var links: [(String, FS.Metadata)] = []
        // The pack transfers of all batches share these slots: the next batch's packs start as
        // the last ones of the batch before are still streaming in.
        let slots = AsyncSemaphore(permits: max(1, options.connections))
        // Completed files of 1 MiB or more leave the page cache behind the restore (CacheRelease).
        let release = CacheRelease()
        defer { release.finish() }
        try await withThrowingTaskGroup(of: Int.self) { group in
            var plan = Plan()
            var writing = 0
            /// Hands the plan over; with `wait`, or while two batches are being written, first
            /// waits for the older one.
            func flush(_ group: inout ThrowingTaskGroup<Int, any Error>, wait: Bool = false) async throws {
                while writing >= (wait ? 1 : 2), let packs = try await group.next() {
                    stats.packs += packs
                    writing -= 1
                }
                guard !plan.packs.isEmpty else {
                    plan = Plan()
                    return
                }
                let (batch, made) = (plan, dirs)
                plan = Plan()
                group.addTask { try await self.write(batch, dirs: made, slots: slots, release: release) }
                writing += 1
            }
            var stack: [Frame] = []
            if part.root.type == .dir {
                stack.append(try await open(part.root, at: target, dirs: &dirs))
            } else {
                dirs.append(Dir(path: target, metadata: nil))
                stack.append(Frame(dir: 0, nodes: [part.root]))
            }
            while !stack.isEmpty {
                let top = stack.count - 1
                guard stack[top].next < stack[top].nodes.count else {
                    stack.removeLast()
                    continue
                }
                let node = stack[top].nodes[stack[top].next]
                stack[top].next += 1
                let dir = stack[top].dir
                let path = dirs[Int(dir)].path
                try node.validateName(in: path)
                let child = path + "/" + node.name
                switch node.type {
                case .dir:
                    try Task.checkCancellation()
                    stack.append(try await open(node, at: child, dirs: &dirs))
                case .symlink:
                    try FS.removeTree(child)
                    guard symlink(node.linkTarget ?? "", child) == 0 else {
                        throw RepositoryError(.io, "cannot create symlink \(child): \(FS.errorText())")
                    }
                    links.append((child, FS.Metadata(node)))
                case .file, .stream:
                    try add(node, in: dir, path: child, to: &plan)
                    stats.files += 1
                    stats.bytes += node.size
                    if plan.files.count >= options.batchFiles || plan.uses >= options.batchBlobs { try await flush(&group) }
                }
            }
            try await flush(&group)
            try await flush(&group, wait: true)  // waits for the last batches
        }
        for (path, metadata) in links { try FS.applyMetadata(metadata, at: path) }
        for dir in dirs.reversed() {
            guard let metadata = dir.metadata else { continue }
            try FS.applyMetadata(metadata, at: dir.path)
            stats.dirs += 1
        }
        stats.files += links.count
        return stats
    }

    /// Makes directory `path` for `dirNode`, clears what the snapshot does not hold there (with
    /// `deleteExtraneous`) and reads its tree.
    private func open(_ dirNode: Node, at path: String, dirs: inout [Dir]) async throws -> Frame {
        guard let subtree = dirNode.subtree else {
            throw RepositoryError(.corrupted, "directory \(path) has no tree in the snapshot")
        }
        let tree = try await repo.walkTree(subtree)
        try FS.makeDirectory(path)
        dirs.append(Dir(path: path, metadata: FS.Metadata(dirNode)))
        if options.deleteExtraneous {
            let wanted = Set(tree.nodes.map(\.name))
            for name in try FS.list(path) where !wanted.contains(name) { try FS.removeTree(path + "/" + name) }
        }
        return Frame(dir: Int32(dirs.count - 1), nodes: tree.nodes)
    }

    /// Files `node`'s chunks under their packs. A file without chunks is made right away.
    private func add(_ node: Node, in dir: Int32, path: String, to plan: inout Plan) throws {
        let file = Int32(plan.files.count)
        var offset: Int64 = 0
        let content = node.content ?? []
        for id in content {
            guard let location = repo.index.lookup(id) else {
                throw RepositoryError(.missing, "blob \(id) of \(path) is not in the index: the repository is damaged")
            }
            plan.packs[location.pack, default: []].append(Use(blob: location.blob, file: file, offset: offset))
            offset += Int64(location.blob.rawLength)
        }
        guard offset == node.size else {
            throw RepositoryError(.corrupted, "\(path): its chunks add up to \(offset) bytes, the snapshot says \(node.size)")
        }
        if content.isEmpty {
            try FileWrites.create(path)
            try FS.applyMetadata(node, at: path)
            return
        }
        plan.files.append(FileJob(dir: dir, name: node.name, metadata: FS.Metadata(node)))
        plan.writes.append(Int32(content.count))
        plan.uses += content.count
    }

    /// Fills a batch's files pack by pack, several packs at once. A file is created (truncated)
    /// when its first blob is written and gets its metadata when its last one is, so creating
    /// files and setting their times overlap with decrypting, instead of running before and after
    /// it. Returns the number of packs read.
    private func write(_ plan: Plan, dirs: [Dir], slots: AsyncSemaphore, release: CacheRelease) async throws -> Int {
        let state = FileWrites(pending: plan.writes.map(Int.init))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (pack, uses) in plan.packs {
                group.addTask {
                    try await slots.withPermit {
                        try Task.checkCancellation()
                        try await self.restorePack(pack, uses, plan: plan, dirs: dirs, state: state, release: release)
                    }
                }
            }
            try await group.waitForAll()
        }
        return plan.packs.count
    }

    /// Streams the part of `pack` that holds `uses` and writes each blob to its files as soon as
    /// its bytes are in: no pack is held in memory, and writing overlaps with the transfer.
    private func restorePack(_ pack: PackID, _ uses: [Use], plan: Plan, dirs: [Dir], state: FileWrites, release: CacheRelease) async throws {
        // One entry per blob, with every place it goes (a chunk many files share is read once).
        var blobs: [(BlobLocation, [Target])] = []
        for use in uses.sorted(by: { $0.blob.offset < $1.blob.offset }) {
            let target = Target(file: Int(use.file), offset: use.offset)
            if let last = blobs.last, last.0.blob.offset == use.blob.offset {
                blobs[blobs.count - 1].1.append(target)
            } else {
                blobs.append((BlobLocation(pack: pack, blob: use.blob), [target]))
            }
        }
        let (range, whole) = span(pack, blobs.map(\.0))
        let checkID = checksIDs(whole: whole)
        let stream = PackStream(pack: pack, blobs: blobs, start: range.lowerBound, verifying: whole ? range.upperBound : nil) { [repo, progress] sealed, location, targets in
            try PackFormat.withOpenedBlob(sealed, entry: location.blob, keys: repo.keys, pack: location.pack, checkID: checkID) { plain in
                for target in targets {
                    let job = plan.files[target.file]
                    let path = dirs[Int(job.dir)].path + "/" + job.name
                    let fd = try state.open(path, file: target.file)
                    var owned = true
                    defer { if owned { close(fd) } }
                    guard writeFully(fd, plain, at: target.offset) else {
                        throw RepositoryError(.io, "cannot write \(path): \(FS.errorText())")
                    }
                    progress.add(bytes: Int64(plain.count))
                    if state.written(file: target.file) {
                        try FS.applyMetadata(job.metadata, at: path)
                        owned = !release.take(fd)
                    }
                }
            }
        }
        try await repo.streamPackRange(pack, range) { try stream.consume($0) }
        try stream.finish()
    }

    /// The smallest range of `pack` covering `blobs`, or the whole pack when that is not much
    /// more. True when whole. Every restored blob's stored bytes are authenticated by its AES-GCM
    /// tag (which binds its id and type); a whole pack must also match its SHA-256 name (checked
    /// when its last byte has streamed in: a mismatch fails the restore). The plaintext is checked
    /// against the blob's keyed id for range reads, and for every blob with `verifyIDs` (that
    /// catches a blob sealed under a wrong id, which the tag cannot); `check --read-data` always
    /// recomputes every id.
    func span(_ pack: PackID, _ blobs: [BlobLocation]) -> (Range<Int64>, Bool) {
        let lower = blobs.map { Int64($0.blob.offset) }.min() ?? 0
        let upper = blobs.map { Int64($0.blob.offset) + Int64($0.blob.length) }.max() ?? 0
        if let size = repo.index.packSize(pack), upper - lower > size * 3 / 4 { return (0..<size, true) }
        return (lower..<upper, false)
    }

    /// Whether blobs read from a whole pack (`whole`) or a range of one have their ids recomputed.
    func checksIDs(whole: Bool) -> Bool { !whole || options.verifyIDs }

    /// Loads the range `span` chooses; a whole pack is checked against its name. Returns where
    /// the data starts in the pack and whether it is the whole (checked) pack.
    func loadSpan(_ pack: PackID, _ blobs: [BlobLocation]) async throws -> (Int64, Data, Bool) {
        let (range, whole) = span(pack, blobs)
        let data = try await repo.loadPackRange(pack, range)
        if whole { _ = try PackFormat.verifyWhole(data, pack: pack, key: repo.keys.encryption) }
        return (range.lowerBound, data, whole)
    }
}

/// Which restored files exist yet and how many blob writes each still waits for. The first
/// write of a file creates (truncates) it under the lock, so no later write can land before the
/// truncation; the last one reports the file complete.
final class FileWrites: Sendable {
    /// The files `i` with `i % stripes.count == k` live in stripe k, at `i / stripes.count`: a
    /// file is created under its stripe's lock only, so creating thousands of small files from
    /// several packs at once does not queue every writer behind one lock.
    private struct Stripe {
        var pending: [Int]
        var created: [Bool]
    }
    private let stripes: [Locked<Stripe>]

    init(pending: [Int]) {
        let n = max(1, min(64, pending.count))
        stripes = (0..<n).map { k in
            let mine = stride(from: k, to: pending.count, by: n).map { pending[$0] }
            return Locked(Stripe(pending: mine, created: [Bool](repeating: false, count: mine.count)))
        }
    }

    /// Opens file `file` for writing, creating it empty on its first write.
    func open(_ path: String, file: Int) throws -> Int32 {
        let slot = file / stripes.count
        let first = try stripes[file % stripes.count].withLock { s -> Int32? in
            guard !s.created[slot] else { return nil }
            let fd = try Self.create(path, keepOpen: true)
            s.created[slot] = true
            return fd
        }
        if let first { return first }
        let fd = Glibc.open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { throw RepositoryError(.io, "cannot open \(path): \(FS.errorText())") }
        return fd
    }

    /// Counts one write of `file` done; true when it was the last.
    func written(file: Int) -> Bool {
        let slot = file / stripes.count
        return stripes[file % stripes.count].withLock { s in
            s.pending[slot] -= 1
            return s.pending[slot] == 0
        }
    }

    /// Creates an empty regular file at `path` (replacing anything else there).
    @discardableResult
    static func create(_ path: String, keepOpen: Bool = false) throws -> Int32 {
        var st = stat()
        if lstat(path, &st) == 0, st.st_mode & S_IFMT != S_IFREG { try FS.removeTree(path) }
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw RepositoryError(.io, "cannot create \(path): \(FS.errorText())") }
        if keepOpen { return fd }
        close(fd)
        return -1
    }
}

/// Takes a pack (or a span of it) as it streams in and hands each wanted blob over as soon as its
/// bytes are complete: a blob inside one piece is handed over in place, one that spans pieces is
/// gathered in a scratch buffer first. With `verify`, the whole pack streams by and must match its
/// name (`PackNameCheck`). Used by one transfer at a time (calls never overlap).
final class PackStream: @unchecked Sendable {
    typealias Handler = (UnsafeRawBufferPointer, BlobLocation, [Restorer.Target]) throws -> Void
    let pack: PackID
    let blobs: [(BlobLocation, [Restorer.Target])]
    let handler: Handler
    private var position: Int64
    private var next = 0
    private var gathered: UnsafeMutableRawBufferPointer?
    private var gatheredCount = 0
    private let nameCheck: PackNameCheck?

    /// `blobs` sorted by offset; `start`: the pack offset of the first byte that will stream in;
    /// `size`: the pack's size when the whole pack streams by and must match its name, nil for
    /// a span (unchecked).
    init(pack: PackID, blobs: [(BlobLocation, [Restorer.Target])], start: Int64, verifying size: Int64?,
         handler: @escaping Handler) {
        self.pack = pack
        self.blobs = blobs
        self.handler = handler
        position = start
        nameCheck = size.map { PackNameCheck(size: $0) }
    }

    deinit {
        if let gathered { PackFormat.scratch.give(gathered) }
    }

    func consume(_ bytes: UnsafeRawBufferPointer) throws {
        try nameCheck?.update(bytes, pack: pack)
        var piece = bytes
        var at = position
        position += Int64(bytes.count)
        while !piece.isEmpty && next < blobs.count {
            let (location, targets) = blobs[next]
            let start = Int64(location.blob.offset)
            let end = start + Int64(location.blob.length)
            if at + Int64(piece.count) <= start { return }  // the piece ends before the next blob
            if at < start {
                piece = UnsafeRawBufferPointer(rebasing: piece[Int(start - at)...])
                at = start
            }
            let length = Int(end - start)
            if gatheredCount == 0 && length <= piece.count {
                try handler(UnsafeRawBufferPointer(rebasing: piece[0..<length]), location, targets)
            } else {
                if let buffer = gathered, buffer.count < length {  // a blob larger than the pooled buffers
                    PackFormat.scratch.give(buffer)
                    gathered = nil
                }
                let buffer = gathered ?? PackFormat.scratch.take(atLeast: length)
                gathered = buffer
                let take = min(length - gatheredCount, piece.count)
                (buffer.baseAddress! + gatheredCount).copyMemory(from: piece.baseAddress!, byteCount: take)
                gatheredCount += take
                piece = UnsafeRawBufferPointer(rebasing: piece[take...])
                at += Int64(take)
                guard gatheredCount == length else { continue }
                gatheredCount = 0
                try handler(UnsafeRawBufferPointer(rebasing: buffer[0..<length]), location, targets)
                next += 1
                continue
            }
            piece = UnsafeRawBufferPointer(rebasing: piece[length...])
            at = end
            next += 1
        }
    }

    /// After the last byte: every wanted blob was handed over, and a whole pack matched its name.
    func finish() throws {
        guard next == blobs.count else {
            throw RepositoryError(.corrupted, "pack \(pack) is truncated: \(blobs.count - next) of its blobs are missing")
        }
        if let nameCheck, nameCheck.matches(pack) == false { throw PackFormat.mismatch(pack) }
    }
}
