import Foundation
import Storage
import Synchronization

extension Archiver {
    /// Backs up the tree (or single file) at `path` into part `name`. Files whose size, mtime and
    /// inode equal those in `parent` (the same part of the parent snapshot) are not read again.
    public func backupTree(path: String, name: String, parent: Part?) async throws -> Part {
        guard let root = try FS.node(at: path, name: (path as NSString).lastPathComponent) else {
            throw RepositoryError(.sourceUnreadable, "\(path) is not a file, directory or symlink")
        }
        let stats = Locked(PartStats())
        let parentRoot = parent?.kind == .tree ? parent?.root : nil
        let node = try await archive(path: path, node: root, parent: parentRoot?.type == root.type ? parentRoot : nil,
                                     stats: stats)
        return Part(name: name, kind: .tree, root: node, source: path, stats: stats.value)
    }

    private func archive(path: String, node: Node, parent: Node?, stats: Locked<PartStats>) async throws -> Node {
        var node = node
        switch node.type {
        case .file:
            if let unchanged = unchanged(node, parent: parent, stats: stats) { return unchanged }
            try await fileSlots.withPermit {
                let fd = try FS.openRead(path)
                defer { close(fd) }
                let (content, size, new) = try await saveContent(fd: fd, name: path)
                node.content = content
                node.size = size
                stats.withLock {
                    $0.files += 1
                    $0.bytes += size
                    $0.newBytes += new
                }
            }
            progress.add(bytes: 0, items: 1)
        case .dir:
            var parentTree: (id: BlobID, tree: Tree)?
            if let subtree = parent?.subtree, parent?.type == .dir, repo.index.has(subtree) {
                parentTree = (subtree, try await repo.walkTree(subtree))
            }
            node.subtree = try await archiveDirectory(path: path, parent: parentTree, stats: stats)
            stats.withLock { $0.dirs += 1 }
        case .symlink:
            stats.withLock { $0.files += 1 }
        case .stream:
            preconditionFailure("a stream node never comes from the file system")
        }
        return node
    }

    /// `node` with its parent's content when its size, mtime and inode are the parent's and all
    /// of its chunks are stored: the file is not read again. Nil when it must be read.
    private func unchanged(_ node: Node, parent: Node?, stats: Locked<PartStats>) -> Node? {
        guard let parent, parent.type == .file, parent.size == node.size, parent.mtimeNs == node.mtimeNs,
              parent.inode == node.inode, let content = parent.content, content.allSatisfy(repo.index.has) else { return nil }
        var node = node
        node.content = content
        stats.withLock {
            $0.files += 1
            $0.bytes += node.size
            $0.unchangedFiles += 1
        }
        progress.add(bytes: node.size, items: 1)
        return node
    }

    private func archiveDirectory(path: String, parent: (id: BlobID, tree: Tree)?, stats: Locked<PartStats>) async throws -> BlobID {
        let names = try FS.list(path)
        // Both lists are sorted by name (bytewise): the parent's entry of each name is found by
        // walking them side by side.
        let old = parent?.tree.nodes ?? []
        var o = 0
        var nodes = [Node?](repeating: nil, count: names.count)
        let window = max(2, ProcessInfo.processInfo.activeProcessorCount * 2)
        try await withThrowingTaskGroup(of: (Int, Node?).self) { group in
            var inFlight = 0
            for (i, name) in names.enumerated() {
                let childPath = path == "/" ? "/" + name : path + "/" + name
                guard let child = try FS.node(at: childPath, name: name) else {
                    repo.logger.warning("skipping \(childPath): not a file, directory or symlink")
                    continue
                }
                while o < old.count, old[o].name.utf8.lexicographicallyPrecedes(name.utf8) { o += 1 }
                let previous = o < old.count && old[o].name.utf8.elementsEqual(name.utf8) ? old[o] : nil
                if child.type == .symlink {
                    nodes[i] = try await archive(path: childPath, node: child, parent: nil, stats: stats)
                    continue
                }
                // An unchanged file needs no task of its own (most files, in a re-backup).
                if child.type == .file, let same = unchanged(child, parent: previous, stats: stats) {
                    nodes[i] = same
                    continue
                }
                if inFlight >= window, let (j, done): (Int, Node?) = try await group.next() {
                    nodes[j] = done
                    inFlight -= 1
                }
                // A file got here because it changed: its parent entry has nothing more to give.
                let parent = child.type == .file ? nil : previous
                if child.type == .dir {
                    guard directoryTasks.add(1, ordering: .relaxed).newValue <= directoryTaskLimit else {
                        directoryTasks.subtract(1, ordering: .relaxed)
                        nodes[i] = try await archive(path: childPath, node: child, parent: parent, stats: stats)
                        continue
                    }
                    group.addTask {
                        defer { self.directoryTasks.subtract(1, ordering: .relaxed) }
                        return (i, try await self.archive(path: childPath, node: child, parent: parent, stats: stats))
                    }
                } else {
                    group.addTask { (i, try await self.archive(path: childPath, node: child, parent: parent, stats: stats)) }
                }
                inFlight += 1
            }
            for try await (j, done) in group { nodes[j] = done }
        }
        let tree = Tree(nodes: nodes.compactMap { $0 })
        // Nothing in it changed: the same entries encode to the same bytes, hence the same id,
        // which is stored already. Encoding and hashing it again would only find that out.
        if let parent, parent.tree.nodes == tree.nodes { return parent.id }
        return try await saveTree(tree)
    }
}
