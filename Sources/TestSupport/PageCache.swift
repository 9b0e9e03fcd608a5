import Foundation

/// How many of a file's pages are in the page cache (mincore over a read-only mapping, which
/// itself reads nothing), and how many pages it has; nil when it cannot be told: the file is
/// missing or empty, or it lives on tmpfs, whose pages are the file and never leave.
public func pageCacheResidency(_ path: String) -> (resident: Int, pages: Int)? {
    guard fileSystemType(of: path) != "tmpfs" else { return nil }
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0, st.st_size > 0 else { return nil }
    let length = Int(st.st_size)
    guard let map = mmap(nil, length, PROT_READ, MAP_SHARED, fd, 0), map != MAP_FAILED else { return nil }
    defer { munmap(map, length) }
    let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
    var vector = [UInt8](repeating: 0, count: (length + pageSize - 1) / pageSize)
    guard mincore(map, length, &vector) == 0 else { return nil }
    return (vector.filter { $0 & 1 != 0 }.count, vector.count)
}

/// Whether the tests' temporary directory can show pages leaving the page cache: not on tmpfs.
/// Tests that check it are skipped, and say so, where it cannot.
public let pageCacheIsObservable = fileSystemType(of: NSTemporaryDirectory()) != "tmpfs"

/// The type of the file system holding `path` (the longest mount point above it in /proc/mounts).
public func fileSystemType(of path: String) -> String? {
    let resolved = (path as NSString).resolvingSymlinksInPath
    guard let mounts = try? String(contentsOfFile: "/proc/mounts", encoding: .utf8) else { return nil }
    var best: (point: String, type: String)?
    for line in mounts.split(separator: "\n") {
        let fields = line.split(separator: " ")
        guard fields.count >= 3 else { continue }
        let point = String(fields[1])
        let inside = point == "/" || resolved == point || resolved.hasPrefix(point + "/")
        if inside, point.count >= (best?.point.count ?? -1) { best = (point, String(fields[2])) }
    }
    return best?.type
}
