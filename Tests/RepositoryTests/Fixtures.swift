import Foundation
import Logging
@testable import Repository
import Storage
import TestSupport

let testLogger: Logger = {
    var l = Logger(label: "test")
    l.logLevel = .error
    return l
}()

/// Small chunks and packs and a cheap KDF, so debug-build tests exercise many chunks and packs fast.
func testOptions() -> RepositoryOptions {
    var o = RepositoryOptions()
    o.chunker = ChunkerParameters(minSize: 4 << 10, averageSize: 16 << 10, maxSize: 64 << 10)
    o.packSize = 256 << 10
    o.kdf = KDFParameters(n: 1 << 10, r: 8, p: 1)
    return o
}

func makeRepository(_ storage: any Storage = MemoryStorage(), password: String = "pw") async throws -> Repository {
    try await Repository.initialize(storage: storage, password: password, options: testOptions(), logger: testLogger)
}

/// A source tree with the things restore must get right: nested and empty directories, a
/// symlink, odd modes, old mtimes, a duplicated file, an empty file, text and random data.
func makeSourceTree(in root: String, seed: UInt64 = 7) throws {
    var gen = SeededBytes(seed: seed)
    let fm = FileManager.default
    try fm.createDirectory(atPath: root + "/a/b/c", withIntermediateDirectories: true)
    try fm.createDirectory(atPath: root + "/empty", withIntermediateDirectories: true)
    try gen.data(300_000).write(to: URL(fileURLWithPath: root + "/random.bin"))
    try gen.text(500_000).write(to: URL(fileURLWithPath: root + "/a/text.txt"))
    let dup = gen.data(100_000)
    try dup.write(to: URL(fileURLWithPath: root + "/a/b/dup1"))
    try dup.write(to: URL(fileURLWithPath: root + "/a/b/c/dup2"))
    try Data().write(to: URL(fileURLWithPath: root + "/a/emptyfile"))
    for i in 0..<30 { try gen.text(Int(gen.next() % 3000)).write(to: URL(fileURLWithPath: root + "/a/b/small\(i)")) }
    try fm.createSymbolicLink(atPath: root + "/a/link", withDestinationPath: "../random.bin")
    try fm.createSymbolicLink(atPath: root + "/dangling", withDestinationPath: "/nonexistent/target")
    chmod(root + "/a/text.txt", 0o640)
    chmod(root + "/a/b/c", 0o750)
    chmod(root + "/random.bin", 0o4755)
    var times = [timespec(tv_sec: 1_000_000_000, tv_nsec: 123_456_789), timespec(tv_sec: 1_000_000_000, tv_nsec: 123_456_789)]
    utimensat(AT_FDCWD, root + "/a/text.txt", &times, 0)
    utimensat(AT_FDCWD, root + "/a/link", &times, AT_SYMLINK_NOFOLLOW)
    utimensat(AT_FDCWD, root + "/empty", &times, 0)
    if geteuid() == 0 { lchown(root + "/a/b/dup1", 1234, 5678) }
}

/// Everything about a tree that a restore must reproduce, keyed by relative path.
struct Entry: Equatable, CustomStringConvertible {
    let type: String
    let mode: UInt32
    let uid: UInt32
    let gid: UInt32
    let mtimeNs: Int64
    let size: Int64
    let link: String?
    let contentHash: String?

    var description: String { "\(type) mode=\(String(mode, radix: 8)) \(uid):\(gid) mtime=\(mtimeNs) size=\(size) link=\(link ?? "-") hash=\(contentHash ?? "-")" }
}

func describeTree(_ root: String, includeRootTimes: Bool = false) throws -> [String: Entry] {
    var result: [String: Entry] = [:]
    func walk(_ rel: String) throws {
        let path = rel.isEmpty ? root : root + "/" + rel
        var st = stat()
        guard lstat(path, &st) == 0 else { throw ConformanceFailure("lstat \(path) failed") }
        let kind = st.st_mode & S_IFMT
        var link: String?
        var hash: String?
        if kind == S_IFLNK { link = try FileManager.default.destinationOfSymbolicLink(atPath: path) }
        if kind == S_IFREG {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            hash = ObjectID(hashing: data).hex
        }
        let isDir = kind == S_IFDIR
        result[rel] = Entry(type: kind == S_IFDIR ? "dir" : kind == S_IFLNK ? "link" : "file",
                            mode: kind == S_IFLNK ? 0 : UInt32(st.st_mode & 0o7777), uid: st.st_uid, gid: st.st_gid,
                            mtimeNs: rel.isEmpty && !includeRootTimes ? 0 : Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec),
                            size: isDir || kind == S_IFLNK ? 0 : Int64(st.st_size), link: link, contentHash: hash)
        if isDir {
            for name in try FileManager.default.contentsOfDirectory(atPath: path) {
                try walk(rel.isEmpty ? name : rel + "/" + name)
            }
        }
    }
    try walk("")
    return result
}

func expectSameTree(_ a: String, _ b: String) throws -> [String] {
    let left = try describeTree(a)
    let right = try describeTree(b)
    var problems: [String] = []
    for key in Set(left.keys).union(right.keys).sorted() where left[key] != right[key] {
        problems.append("\(key): source \(left[key].map(\.description) ?? "missing") vs restored \(right[key].map(\.description) ?? "missing")")
    }
    return problems
}
