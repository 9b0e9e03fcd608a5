import Foundation
@testable import Repository
import Testing

/// The hand-written tree coder must write exactly Foundation's bytes (a tree's id is the hash of
/// its bytes, so a difference would store every unchanged directory again) and read what
/// Foundation reads.
@Suite struct TreeCodecTests {
    static func id(_ seed: Int) -> BlobID {
        var bytes = [UInt8](repeating: 0, count: 32)
        for k in 0..<32 { bytes[k] = UInt8(truncatingIfNeeded: seed &* 131 &+ k &* 17) }
        return bytes.withUnsafeBytes { BlobID(Digest32(bytes: $0)) }
    }

    /// Nodes with every optional field present and absent, extreme numbers and names of every kind.
    static func sampleNodes(names: [String]) -> [Node] {
        var generator = SystemRandomNumberGenerator()
        var nodes: [Node] = []
        for (k, name) in names.enumerated() {
            let type: NodeType = [.file, .dir, .symlink, .stream][k % 4]
            var node = Node(name: name, type: type, mode: [0, 0o644, 0o7777, UInt32.max][k % 4],
                            uid: [0, 1000, UInt32.max][k % 3], gid: UInt32(k), mtimeNs: [Int64.min, -1, 0, 1_700_000_000_123_456_789, Int64.max][k % 5],
                            size: [0, 1, Int64.max, Int64.random(in: 0...Int64.max, using: &generator)][k % 4],
                            device: [0, UInt64.max, 2049][k % 3], inode: UInt64.random(in: 0...UInt64.max, using: &generator))
            switch type {
            case .file: node.content = (0..<(k % 4)).map { id(k * 10 + $0) }
            case .dir: node.subtree = id(k)
            case .symlink: node.linkTarget = k % 2 == 0 ? "../target file" : "rel\u{00e9}"
            case .stream: node.contentList = id(k + 7)
            }
            nodes.append(node)
        }
        return nodes
    }

    static let plainNames = ["a", "file_000123.txt", "with space", "été", "日本語のファイル", "emoji 😀", "\u{2028}sep", "tab-less~!@#$%^&*()",
                             "x\u{7f}del", "long-" + String(repeating: "n", count: 200), "combining e\u{301}"]
    static let escapedNames = ["slash/inside", "quote\"d", "back\\slash", "new\nline", "ctrl\u{01}", "nul\u{0}"]

    @Test func writesFoundationsBytes() throws {
        for names in [Self.plainNames, Self.escapedNames, Self.plainNames + Self.escapedNames, []] {
            let tree = Tree(nodes: Self.sampleNodes(names: names))
            let ours = TreeCodec.encode(tree)
            let foundation = JSON.encode(tree)
            #expect(ours == foundation, "\(String(decoding: ours, as: UTF8.self))\n\(String(decoding: foundation, as: UTF8.self))")
            let back = try TreeCodec.decode(ours, what: "t")
            #expect(back.nodes == tree.nodes)
        }
    }

    /// Two nodes are equal exactly when they encode to the same bytes: every field counts, and
    /// names and link targets are compared as bytes (a backup reuses the parent's tree id when
    /// its nodes are equal).
    @Test func nodesAreEqualOnlyWhenTheirBytesAre() {
        let base = Node(name: "caf\u{e9}", type: .symlink, mode: 0o644, uid: 1, gid: 2, mtimeNs: 3, size: 4, device: 5, inode: 6,
                        linkTarget: "t\u{e9}", content: [Self.id(1)], subtree: Self.id(2))
        var changes: [(String, (inout Node) -> Void)] = [
            ("name spelled decomposed", { $0.name = "cafe\u{301}" }), ("type", { $0.type = .file }), ("mode", { $0.mode = 0o600 }),
            ("uid", { $0.uid = 9 }), ("gid", { $0.gid = 9 }), ("mtime", { $0.mtimeNs = 9 }), ("size", { $0.size = 9 }),
            ("device", { $0.device = 9 }), ("inode", { $0.inode = 9 }), ("link target decomposed", { $0.linkTarget = "te\u{301}" }),
            ("no link target", { $0.linkTarget = nil }), ("empty link target", { $0.linkTarget = "" }),
            ("content", { $0.content = [Self.id(3)] }), ("no content", { $0.content = nil }),
            ("content list", { $0.contentList = Self.id(4) }), ("subtree", { $0.subtree = Self.id(5) }),
        ]
        changes.append(("nothing", { _ in }))
        for (what, change) in changes {
            var other = base
            change(&other)
            let sameBytes = TreeCodec.encode(Tree(nodes: [base])) == TreeCodec.encode(Tree(nodes: [other]))
            #expect((base == other) == sameBytes, "\(what)")
            #expect(sameBytes == (what == "nothing"), "\(what)")
        }
    }

    @Test func readsWhatFoundationReads() throws {
        let tree = Tree(nodes: Self.sampleNodes(names: Self.plainNames + Self.escapedNames))
        let text = String(decoding: JSON.encode(tree), as: UTF8.self)
        // Other spellings of the same tree: spaces, another key order, escapes, null, unknown keys.
        let variants = [
            text.replacingOccurrences(of: ",", with: " ,\n\t").replacingOccurrences(of: ":", with: " : "),
            text.replacingOccurrences(of: "\"a\"", with: "\"\\u0061\""),
            text.replacingOccurrences(of: "\"gid\":", with: "\"future\":{\"x\":[1,2]},\"gid\":"),
            text.replacingOccurrences(of: "\"device\":", with: "\"linkTarget\":null,\"device\":"),
        ]
        for variant in variants {
            let data = Data(variant.utf8)
            let foundation = try JSONDecoder().decode(Tree.self, from: data)
            #expect(try TreeCodec.decode(data, what: "t").nodes == foundation.nodes)
        }
    }

    @Test(arguments: [
        #"{"nodes":[{"name":"a"}]}"#,  // required fields missing
        #"{"nodes":[{"device":0,"gid":0,"inode":0,"mode":4294967296,"mtimeNs":0,"name":"a","size":0,"type":"file","uid":0}]}"#,
        #"{"nodes":[{"device":0,"gid":0,"inode":0,"mode":0,"mtimeNs":0,"name":"a","size":0,"type":"fifo","uid":0}]}"#,
        #"{"nodes":[{"content":["zz"],"device":0,"gid":0,"inode":0,"mode":0,"mtimeNs":0,"name":"a","size":0,"type":"file","uid":0}]}"#,
        #"{"nodes":[{"device":0,"gid":0,"inode":0,"mode":0,"mtimeNs":0,"name":"a","size":99999999999999999999,"type":"file","uid":0}]}"#,
        #"{"nodes":["#,
        #"{"nodes":[]}trailing"#,
        "",
    ])
    func damagedTreesAreCorrupted(text: String) {
        let error = #expect(throws: RepositoryError.self) { try TreeCodec.decode(Data(text.utf8), what: "tree 1234") }
        #expect(error?.code == .corrupted)
        #expect(error?.message.hasPrefix("tree 1234 cannot be decoded") == true, "\(String(describing: error))")
    }
}
