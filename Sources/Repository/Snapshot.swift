import Foundation

public enum NodeType: String, Codable, Sendable {
    case file, dir, symlink
    /// A byte stream with no file metadata (a database dump).
    case stream
}

/// One entry of a tree: a file, directory, symlink or stream, with the metadata restore puts back.
public struct Node: Codable, Sendable, Equatable {
    public var name: String
    public var type: NodeType
    /// Permission bits, including setuid, setgid and sticky (st_mode & 07777).
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    /// Modification time, nanoseconds since the epoch.
    public var mtimeNs: Int64
    public var size: Int64
    /// Device and inode at backup time: with size and mtime they tell an unchanged file.
    public var device: UInt64
    public var inode: UInt64
    public var linkTarget: String?
    /// The chunks of a file or stream, in order.
    public var content: [BlobID]?
    /// A stream part's chunks, stored as a blob of their own (a `ChunkList`, in a tree pack)
    /// instead of inline in `content` (snapshot version 2): a part then carries one id however
    /// long its stream, and listing snapshots does not decode every chunk list.
    public var contentList: BlobID?
    /// The tree blob of a directory.
    public var subtree: BlobID?

    public init(name: String, type: NodeType, mode: UInt32 = 0, uid: UInt32 = 0, gid: UInt32 = 0, mtimeNs: Int64 = 0,
                size: Int64 = 0, device: UInt64 = 0, inode: UInt64 = 0, linkTarget: String? = nil,
                content: [BlobID]? = nil, subtree: BlobID? = nil) {
        self.name = name
        self.type = type
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtimeNs = mtimeNs
        self.size = size
        self.device = device
        self.inode = inode
        self.linkTarget = linkTarget
        self.content = content
        self.subtree = subtree
    }

    /// Equal when they encode to the same tree bytes: names and link targets are compared as
    /// bytes, since `String ==` also holds for canonically equivalent spellings (é composed or
    /// not), which are different names to the file system. Every stored field is compared.
    public static func == (a: Node, b: Node) -> Bool {
        a.name.utf8.elementsEqual(b.name.utf8) && a.type == b.type && a.mode == b.mode && a.uid == b.uid && a.gid == b.gid
            && a.mtimeNs == b.mtimeNs && a.size == b.size && a.device == b.device && a.inode == b.inode
            && sameBytes(a.linkTarget, b.linkTarget) && a.content == b.content && a.contentList == b.contentList
            && a.subtree == b.subtree
    }

    private static func sameBytes(_ x: String?, _ y: String?) -> Bool {
        switch (x, y) {
        case (nil, nil): true
        case let (x?, y?): x.utf8.elementsEqual(y.utf8)
        default: false
        }
    }
}

extension Node {
    /// Whether `name` can name an entry inside a directory: not empty, not `.` or `..`, no `/`
    /// and no NUL (which would cut the name short at the system call). Restore refuses any other
    /// name and check reports it: this one rule serves both.
    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name != "." && name != ".." && !name.utf8.contains(UInt8(ascii: "/")) && !name.utf8.contains(0)
    }

    /// Throws `.corrupted` when this node's name is not a valid entry name (see `isValidName`);
    /// `path` is the directory it would be restored into.
    public func validateName(in path: String) throws {
        guard Self.isValidName(name) else {
            throw RepositoryError(.corrupted, "the snapshot holds an invalid file name \"\(name.debugEscaped)\" in \(path)")
        }
    }
}

extension String {
    /// The string with control characters (NUL, newlines…) escaped, so a message stays one line.
    var debugEscaped: String {
        String(String.UnicodeScalarView(unicodeScalars.flatMap { scalar -> [Unicode.Scalar] in
            scalar.properties.generalCategory == .control ? Array(scalar.escaped(asASCII: false).unicodeScalars) : [scalar]
        }))
    }
}

/// One directory's entries, sorted by name. Stored as a tree blob (JSON).
public struct Tree: Codable, Sendable {
    public var nodes: [Node]
}

/// A stream's chunks, in order: the blob a stream node's `contentList` names (JSON, stored like
/// a tree blob).
public struct ChunkList: Codable, Sendable {
    public var content: [BlobID]
}

public enum PartKind: String, Codable, Sendable {
    case tree, stream
}

public struct PartStats: Codable, Sendable, Equatable {
    public var files: Int = 0
    public var dirs: Int = 0
    public var bytes: Int64 = 0
    /// Files taken unchanged from the parent snapshot without reading them.
    public var unchangedFiles: Int = 0
    /// Bytes of new blobs this backup stored for this part (before compression).
    public var newBytes: Int64 = 0

    public init() {}
}

/// One named piece of a snapshot: a file tree (root = the directory node) or a byte stream
/// (root = a stream node with its content).
public struct Part: Codable, Sendable {
    public var name: String
    public var kind: PartKind
    public var root: Node
    public var source: String?
    public var stats: PartStats
}

/// A snapshot record (`snapshots/<sha256>`): written last, after everything it refers to.
public struct Snapshot: Codable, Sendable {
    /// 2: stream parts keep their chunks in a `ChunkList` blob. Version 1 (inline chunks) is read too.
    public var version = Snapshot.currentVersion
    public static let currentVersion = 2
    public var time: Date
    public var hostname: String
    public var username: String
    public var tags: [String]
    public var parent: SnapshotID?
    public var program: String
    public var parts: [Part]
    /// Free-form facts recorded by the caller (the controller records Che's version, namespace…).
    public var metadata: [String: String]

    public var totalBytes: Int64 { parts.reduce(0) { $0 + $1.stats.bytes } }
}

public let programVersion = "chebackup 0.1.0"
