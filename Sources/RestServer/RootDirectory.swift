import Foundation

/// The served directory, opened once. Every path below it is opened one component at a time
/// with `O_NOFOLLOW` from this descriptor, so a symbolic link inside the root is never followed,
/// out of the root or anywhere else: reads, writes, lists, deletes and creates all come here.
/// (Request paths never hold `.` or `..`, so component-wise no-follow opens stay beneath it.)
final class RootDirectory: Sendable {
    let fd: Int32

    init(path: String) throws {
        fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw HTTPFailure(.internalServerError, "cannot open the served directory: \(errorText())") }
    }

    deinit { close(fd) }

    /// A descriptor of the directory that `components` name below the root (none: the root),
    /// which the caller closes. With `create`, missing directories are made (mode 0700).
    func openDirectory(_ components: [String], create: Bool = false) throws -> Int32 {
        var current = dup(fd)
        guard current >= 0 else { throw HTTPFailure(.internalServerError, "cannot open the served directory: \(errorText())") }
        for component in components {
            if create && mkdirat(current, component, 0o700) != 0 && errno != EEXIST {
                let code = errno
                close(current)
                throw HTTPFailure(.internalServerError, "cannot create a directory: \(errorText(code))")
            }
            let next = openSubdirectory(current, component)
            let code = errno
            close(current)
            guard next >= 0 else { throw Self.failure(code) }
            current = next
        }
        return current
    }

    /// Runs `body` with the directory's descriptor and closes it afterwards.
    func withDirectory<T>(_ components: [String], create: Bool = false, _ body: (Int32) throws -> T) throws -> T {
        let dir = try openDirectory(components, create: create)
        defer { close(dir) }
        return try body(dir)
    }

    /// The failure for an `openat` that failed with `code`.
    static func failure(_ code: Int32) -> HTTPFailure {
        switch code {
        case ENOENT, ENOTDIR: HTTPFailure(.notFound, "not found")
        case ELOOP: HTTPFailure(.forbidden, "symbolic links are not followed")
        default: HTTPFailure(.internalServerError, "cannot open: \(errorText(code))")
        }
    }
}

/// Opens the subdirectory `name` of `dir` without following a link; -1 and errno on failure.
func openSubdirectory(_ dir: Int32, _ name: String) -> Int32 {
    openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
}

/// One entry of a directory, with its type as `readdir` reports it (`DT_UNKNOWN` resolved with
/// `fstatat` that does not follow links).
struct DirectoryEntry {
    let name: String
    let isRegularFile: Bool
    let isDirectory: Bool
}

/// The entries of the directory `dir` (not closed), without `.` and `..`.
func directoryEntries(_ dir: Int32) throws -> [DirectoryEntry] {
    let copy = dup(dir)
    guard copy >= 0, let stream = fdopendir(copy) else {
        if copy >= 0 { close(copy) }
        throw HTTPFailure(.internalServerError, "cannot list a directory: \(errorText())")
    }
    defer { closedir(stream) }
    rewinddir(stream)
    var entries: [DirectoryEntry] = []
    while let entry = readdir(stream) {
        let name = withUnsafePointer(to: entry.pointee.d_name) { pointer in
            pointer.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
        }
        if name == "." || name == ".." { continue }
        var type = Int32(entry.pointee.d_type)
        if type == Int32(DT_UNKNOWN) {
            var st = stat()
            guard fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
            type = st.st_mode & S_IFMT == S_IFREG ? Int32(DT_REG) : st.st_mode & S_IFMT == S_IFDIR ? Int32(DT_DIR) : Int32(DT_LNK)
        }
        entries.append(DirectoryEntry(name: name, isRegularFile: type == Int32(DT_REG), isDirectory: type == Int32(DT_DIR)))
    }
    return entries
}
