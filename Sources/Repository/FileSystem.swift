import Foundation
import Storage

/// Thin, throwing wrappers over the POSIX calls the archiver and restorer use.
enum FS {
    static func errorText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }

    /// Metadata of `path` (not following symlinks) as a node; nil for sockets, devices and fifos.
    static func node(at path: String, name: String) throws -> Node? {
        var st = stat()
        guard lstat(path, &st) == 0 else {
            throw RepositoryError(.sourceUnreadable, "cannot read \(path): \(errorText())")
        }
        let type: NodeType
        switch st.st_mode & S_IFMT {
        case S_IFREG: type = .file
        case S_IFDIR: type = .dir
        case S_IFLNK: type = .symlink
        default: return nil
        }
        var node = Node(name: name, type: type, mode: UInt32(st.st_mode & 0o7777), uid: st.st_uid, gid: st.st_gid,
                        mtimeNs: Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec),
                        size: type == .file ? Int64(st.st_size) : 0, device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
        if type == .symlink { node.linkTarget = try readLink(path) }
        return node
    }

    static func readLink(_ path: String) throws -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n >= 0 else { throw RepositoryError(.sourceUnreadable, "cannot read link \(path): \(errorText())") }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func list(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else {
            throw RepositoryError(.sourceUnreadable, "cannot list \(path): \(errorText())")
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }  // byte order, as trees are sorted
    }

    static func openRead(_ path: String) throws -> Int32 {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { throw RepositoryError(.sourceUnreadable, "cannot open \(path): \(errorText())") }
        return fd
    }

    static func makeDirectory(_ path: String) throws {
        if mkdir(path, 0o700) == 0 { return }
        let code = errno
        var st = stat()
        if code == EEXIST, lstat(path, &st) == 0 {
            if st.st_mode & S_IFMT == S_IFDIR { return }
            try removeTree(path)
            if mkdir(path, 0o700) == 0 { return }
        }
        throw RepositoryError(.io, "cannot create directory \(path): \(errorText(code))")
    }

    static func makeDirectories(_ path: String) throws {
        var current = ""
        for component in path.split(separator: "/", omittingEmptySubsequences: true) {
            current += "/" + component
            if mkdir(current, 0o755) != 0 && errno != EEXIST {
                throw RepositoryError(.io, "cannot create directory \(current): \(errorText())")
            }
        }
    }

    /// Removes a file, symlink or whole directory tree.
    static func removeTree(_ path: String) throws {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        if st.st_mode & S_IFMT == S_IFDIR {
            for name in try list(path) { try removeTree(path + "/" + name) }
            guard rmdir(path) == 0 else { throw RepositoryError(.io, "cannot remove \(path): \(errorText())") }
        } else {
            guard unlink(path) == 0 else { throw RepositoryError(.io, "cannot remove \(path): \(errorText())") }
        }
    }

    /// What restore puts back on a file, directory or symlink once its content is in: 24 bytes,
    /// where a whole node holds its name, chunk list and more.
    struct Metadata: Sendable {
        let mode: UInt32
        let uid: UInt32
        let gid: UInt32
        let symlink: Bool
        let mtimeNs: Int64

        init(_ node: Node) {
            mode = node.mode
            uid = node.uid
            gid = node.gid
            symlink = node.type == .symlink
            mtimeNs = node.mtimeNs
        }
    }

    /// Puts back owner (when running as root), mode and mtime. Symlinks get owner and mtime only.
    static func applyMetadata(_ node: Node, at path: String) throws {
        try applyMetadata(Metadata(node), at: path)
    }

    static func applyMetadata(_ node: Metadata, at path: String) throws {
        if geteuid() == 0 {
            guard lchown(path, node.uid, node.gid) == 0 else {
                throw RepositoryError(.io, "cannot set owner of \(path): \(errorText())")
            }
        }
        if !node.symlink {
            guard chmod(path, mode_t(node.mode)) == 0 else {
                throw RepositoryError(.io, "cannot set mode of \(path): \(errorText())")
            }
        }
        var times = [timespec](repeating: timespec(), count: 2)
        times[0] = timespec(tv_sec: Int(node.mtimeNs / 1_000_000_000), tv_nsec: Int(node.mtimeNs % 1_000_000_000))
        times[1] = times[0]
        guard utimensat(AT_FDCWD, path, times, AT_SYMLINK_NOFOLLOW) == 0 else {
            throw RepositoryError(.io, "cannot set times of \(path): \(errorText())")
        }
    }
}
