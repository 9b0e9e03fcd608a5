import Foundation
import Storage
import Synchronization

/// What to back up into one part of a snapshot.
public enum BackupSource: Sendable {
    /// A file tree (or a single file) at `path`, stored as part `name`.
    case path(String, name: String)
    /// A byte stream read from a file descriptor until its end, stored as part `name`.
    case stream(fd: Int32, name: String)
    /// A stream from a program (pg_dump), started when its turn comes; its exit status decides
    /// whether the part is good.
    case producer(name: String, start: @Sendable () throws -> any StreamProducer)

    public var name: String {
        switch self {
        case .path(_, let name), .stream(_, let name), .producer(let name, _): name
        }
    }
}

/// A running producer of a byte stream.
public protocol StreamProducer: Sendable {
    /// The read end of its output.
    var fd: Int32 { get }
    /// Waits for the producer to end; throws when it failed (its output is then not a valid part).
    func finish() async throws
    /// Stops it (on failure or cancellation).
    func abort()
}

public struct BackupOptions: Sendable {
    public var tags: [String] = []
    public var hostname = ProcessInfo.processInfo.hostName
    public var metadata: [String: String] = [:]
    /// The snapshot whose unchanged files are not read again. Nil: for each part, the latest
    /// snapshot that has a part of the same name and, when `installation` is set, whose
    /// metadata names that installation (`installationId`). Host names are not compared: the
    /// controller records its own host name on snapshots whose parts agents on other hosts
    /// store, and a pod's host name changes when it is recreated.
    public var parent: SnapshotID?
    /// The installation whose snapshots may be parents (the controller's `installationId`).
    /// Nil: any snapshot with a part of the same name (the `repo` commands, and agents, which
    /// do not know the id the controller records).
    public var installation: String?
    /// Read every file, even unchanged ones.
    public var force = false
    /// Upload slots (packs stored at once).
    public var connections = 4
    /// Files read at once: one more than the cores, so the cores stay busy while a file waits on
    /// I/O. Each holds a read buffer of the largest chunk plus 1 MiB (5 MiB by default).
    public var fileConcurrency = ProcessInfo.processInfo.activeProcessorCount + 1
    /// Parts backed up at once (several database dumps in parallel).
    public var partConcurrency = 1
    public init() {}
}

/// Reads sources, cuts them into chunks and hands new chunks to a `BlobWriter`. Parallel across
/// files and, inside one large file or stream, across chunks; the chunk window bounds memory.
public final class Archiver: Sendable {
    let repo: Repository
    let writer: BlobWriter
    let progress: ProgressCounters
    let fileSlots: AsyncSemaphore
    let chunkWindow: Int
    let pools: ChunkPools
    /// Files and streams being read right now.
    let activeReaders = Atomic<Int>(0)
    /// Directories archived in tasks of their own right now. Each directory runs a few children
    /// at once, so without a bound on the whole walk nested directories multiply: a tree of
    /// 50,000 one-file directories had every one of them in flight (14 MiB of task frames).
    /// Past `directoryTaskLimit`, a subdirectory is walked inline, depth first.
    let directoryTasks = Atomic<Int>(0)
    let directoryTaskLimit = max(8, ProcessInfo.processInfo.activeProcessorCount * 8)

    public init(repository: Repository, writer: BlobWriter, progress: ProgressCounters, fileConcurrency: Int) {
        repo = repository
        self.writer = writer
        self.progress = progress
        fileSlots = AsyncSemaphore(permits: max(1, fileConcurrency))
        chunkWindow = max(2, ProcessInfo.processInfo.activeProcessorCount)
        pools = ChunkPools(parameters: repository.chunker.parameters, readers: max(1, fileConcurrency),
                           chunksInFlight: chunkWindow + 1)  // copies are made only while one input is read
    }

    /// Chunks everything `fd` yields and stores new chunks. Returns the content list, the size and
    /// the bytes that were new to the repository.
    ///
    /// While other files are being read too, their tasks keep the cores busy: a new chunk is
    /// sealed right here, from the read buffer (no copy). When this is the only input being read
    /// (a stream, or the last large file of a tree), up to `chunkWindow` chunks are copied out and
    /// sealed in parallel.
    func saveContent(fd: Int32, name: String) async throws -> (content: [BlobID], size: Int64, new: Int64) {
        let reader = ChunkReader(chunker: repo.chunker, fd: fd, name: name, pools: pools)
        activeReaders.add(1, ordering: .relaxed)
        defer { activeReaders.subtract(1, ordering: .relaxed) }
        var ids: [BlobID] = []
        var size: Int64 = 0
        var newBytes: Int64 = 0
        try await withThrowingTaskGroup(of: Int64.self) { group in
            var inFlight = 0
            while let chunk = try reader.next() {
                try Task.checkCancellation()
                size += Int64(chunk.count)
                let id = repo.blobID(chunk)
                ids.append(id)
                if repo.index.claim(id) {
                    if inFlight == 0 && activeReaders.load(ordering: .relaxed) > 1 {
                        try writer.store(chunk, id: id, type: .data)
                        try await writer.uploadFull()
                        newBytes += Int64(chunk.count)
                    } else {
                        if inFlight >= chunkWindow {
                            newBytes += try await group.next() ?? 0
                            inFlight -= 1
                        }
                        let copy = reader.copy(chunk)
                        group.addTask { [writer] in
                            try await writer.store(copy, id: id, type: .data)
                            return Int64(copy.count)
                        }
                        inFlight += 1
                    }
                }
                progress.add(bytes: Int64(chunk.count))
            }
            for try await n in group { newBytes += n }
        }
        return (ids, size, newBytes)
    }

    /// Stores a tree blob (if new) and returns its id.
    func saveTree(_ tree: Tree) async throws -> BlobID {
        let data = TreeCodec.encode(tree)
        let id = repo.blobID(data)
        try await writer.save(data, id: id, type: .tree)
        return id
    }

    /// Backs up a stream into a part whose root is a stream node.
    public func backupStream(fd: Int32, name: String) async throws -> Part {
        let (content, size, new) = try await saveContent(fd: fd, name: name)
        var stats = PartStats()
        stats.bytes = size
        stats.newBytes = new
        stats.files = 1
        progress.add(bytes: 0, items: 1)
        let now = Int64(Date().timeIntervalSince1970 * 1e9)
        var root = Node(name: name, type: .stream, mode: 0o600, mtimeNs: now, size: size)
        let list = JSON.encode(ChunkList(content: content))
        let listID = repo.blobID(list)
        try await writer.save(list, id: listID, type: .tree)
        root.contentList = listID
        return Part(name: name, kind: .stream, root: root, source: nil, stats: stats)
    }
}
