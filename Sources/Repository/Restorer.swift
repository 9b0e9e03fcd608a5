import Foundation
import Storage
import Synchronization

public struct RestoreOptions: Sendable {
    /// Packs downloaded at once.
    public var connections = 4
    /// Remove files and directories in the target that the snapshot does not hold.
    public var deleteExtraneous = false
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

    struct FileJob {
        let path: String
        let node: Node
    }

    struct Target {
        let file: Int
        let offset: Int64
    }

    /// Restores a tree part: a directory root's contents go into `target`; a file or symlink root
    /// becomes `target/<name>`.
    public func restoreTree(_ part: Part, into target: String) async throws -> RestoreStats {
        guard part.kind == .tree else {
            throw RepositoryError(.invalidArgument, "part \(part.name) is a stream: restore it to a file or --stdout")
        }
        try FS.makeDirectories(target)
        try await repo.preloadTrees(connections: options.connections)
        var files: [FileJob] = []
        var dirs: [(String, Node)] = []
        var links: [(String, Node)] = []
        if part.root.type == .dir {
            try await plan(part.root, at: target, files: &files, dirs: &dirs, links: &links)
        } else {
            try await plan(Tree(nodes: [part.root]), at: target, files: &files, dirs: &dirs, links: &links)
        }
        progress.setTotal(files.reduce(0) { $0 + $1.node.size })
        let packs = try await writeFiles(files)
        for (path, node) in links { try FS.applyMetadata(node, at: path) }
        for (path, node) in dirs.reversed() { try FS.applyMetadata(node, at: path) }
        return RestoreStats(files: files.count + links.count, dirs: dirs.count, bytes: files.reduce(0) { $0 + $1.node.size },
                            packs: packs)
    }

    private func plan(_ dirNode: Node, at path: String, files: inout [FileJob], dirs: inout [(String, Node)],
                      links: inout [(String, Node)]) async throws {
        guard let subtree = dirNode.subtree else {
            throw RepositoryError(.corrupted, "directory \(path) has no tree in the snapshot")
        }
        try FS.makeDirectory(path)
        dirs.append((path, dirNode))
        try await plan(try await repo.loadTree(subtree), at: path, files: &files, dirs: &dirs, links: &links)
    }

    private func plan(_ tree: Tree, at path: String, files: inout [FileJob], dirs: inout [(String, Node)],
                      links: inout [(String, Node)]) async throws {
        let wanted = Set(tree.nodes.map(\.name))
        if options.deleteExtraneous {
            for name in try FS.list(path) where !wanted.contains(name) { try FS.removeTree(path + "/" + name) }
        }
        for node in tree.nodes {
            guard !node.name.isEmpty, node.name != ".", node.name != "..", !node.name.contains("/") else {
                throw RepositoryError(.corrupted, "the snapshot holds an invalid file name \"\(node.name)\" in \(path)")
            }
            let child = path + "/" + node.name
            switch node.type {
            case .dir:
                try await plan(node, at: child, files: &files, dirs: &dirs, links: &links)
            case .symlink:
                try FS.removeTree(child)
                guard symlink(node.linkTarget ?? "", child) == 0 else {
                    throw RepositoryError(.io, "cannot create symlink \(child): \(FS.errorText())")
                }
                links.append((child, node))
            case .file, .stream:
                files.append(FileJob(path: child, node: node))
            }
        }
    }

    /// Creates every file, then fills them pack by pack. Returns the number of packs read.
    private func writeFiles(_ files: [FileJob]) async throws -> Int {
        var byPack: [PackID: [(BlobLocation, [Target])]] = [:]
        var slot: [BlobID: (PackID, Int)] = [:]
        for (i, job) in files.enumerated() {
            try createEmpty(job.path)
            var offset: Int64 = 0
            for id in job.node.content ?? [] {
                guard let location = repo.index.lookup(id) else {
                    throw RepositoryError(.missing, "blob \(id) of \(job.path) is not in the index: the repository is damaged")
                }
                let target = Target(file: i, offset: offset)
                if let (pack, k) = slot[id] {
                    byPack[pack]![k].1.append(target)
                } else {
                    slot[id] = (location.pack, byPack[location.pack, default: []].count)
                    byPack[location.pack, default: []].append((location, [target]))
                }
                offset += Int64(location.blob.rawLength)
            }
            guard offset == job.node.size else {
                throw RepositoryError(.corrupted, "\(job.path): its chunks add up to \(offset) bytes, the snapshot says \(job.node.size)")
            }
        }
        let work = Array(byPack)
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = 0
            for _ in 0..<min(max(1, options.connections), work.count) {
                let item = work[next]
                next += 1
                group.addTask { try await self.restorePack(item.key, item.value, files: files) }
            }
            while try await group.next() != nil {
                if next < work.count {
                    let item = work[next]
                    next += 1
                    group.addTask { try await self.restorePack(item.key, item.value, files: files) }
                }
            }
        }
        for job in files { try FS.applyMetadata(job.node, at: job.path) }
        return work.count
    }

    private func createEmpty(_ path: String) throws {
        var st = stat()
        if lstat(path, &st) == 0, st.st_mode & S_IFMT != S_IFREG { try FS.removeTree(path) }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw RepositoryError(.io, "cannot create \(path): \(FS.errorText())") }
        close(fd)
    }

    private func restorePack(_ pack: PackID, _ blobs: [(BlobLocation, [Target])], files: [FileJob]) async throws {
        let (base, data) = try await loadSpan(pack, blobs.map(\.0))
        for (location, targets) in blobs {
            let start = Int(Int64(location.blob.offset) - base)
            try data.withUnsafeBytes { raw in
                let sealed = UnsafeRawBufferPointer(rebasing: raw[start..<(start + Int(location.blob.length))])
                try PackFormat.withOpenedBlob(sealed, entry: location.blob, keys: repo.keys, pack: location.pack) { plain in
                    for target in targets {
                        let path = files[target.file].path
                        let fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW)
                        guard fd >= 0 else { throw RepositoryError(.io, "cannot open \(path): \(FS.errorText())") }
                        defer { close(fd) }
                        var done = 0
                        while done < plain.count {
                            let n = pwrite(fd, plain.baseAddress! + done, plain.count - done, off_t(target.offset) + off_t(done))
                            if n < 0 {
                                if errno == EINTR { continue }
                                throw RepositoryError(.io, "cannot write \(path): \(FS.errorText())")
                            }
                            done += n
                        }
                        progress.add(bytes: Int64(plain.count))
                    }
                }
            }
        }
    }

    /// Loads the smallest range of `pack` covering `blobs`. A whole-pack load is checked against
    /// the pack's name (SHA-256); every blob is authenticated by AES-GCM and its id in any case.
    func loadSpan(_ pack: PackID, _ blobs: [BlobLocation]) async throws -> (Int64, Data) {
        let lower = blobs.map { Int64($0.blob.offset) }.min() ?? 0
        let upper = blobs.map { Int64($0.blob.offset) + Int64($0.blob.length) }.max() ?? 0
        let size = repo.index.packSize(pack)
        if let size, upper - lower > size * 3 / 4 {
            let whole = try await repo.loadPackRange(pack, 0..<size)
            guard ObjectID(hashing: whole) == pack else {
                throw RepositoryError(.corrupted, "pack \(pack) is corrupted: its content does not match its name")
            }
            return (0, whole)
        }
        return (lower, try await repo.loadPackRange(pack, lower..<upper))
    }
}
