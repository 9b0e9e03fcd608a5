import Foundation

/// Tree blobs coded by hand: the bytes are exactly what `JSON.encode` (Foundation's encoder, keys
/// sorted) writes for a `Tree`, so a tree's id does not depend on which of the two wrote it, and
/// every tree is still plain JSON (format §0). Backups encode a tree per directory and decode the
/// parent's; restores and checks decode every tree: Foundation's coder goes through generic
/// keyed containers for every field of every node, this one reads and writes the bytes directly.
///
/// Only the common shape takes the fast path: names and link targets without characters JSON
/// escapes (`"`, `\`, `/`, controls), integers without fractions or exponents, no unknown keys,
/// no `null`. Anything else goes through Foundation's coder, which then decides (and names any
/// error) as it always did.
enum TreeCodec {
    static func encode(_ tree: Tree) -> Data {
        var out = [UInt8]()
        out.reserveCapacity(16 + tree.nodes.count * 240)
        out.append(contentsOf: #"{"nodes":["#.utf8)
        for (i, node) in tree.nodes.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            guard append(node, to: &out) else { return JSON.encode(tree) }
        }
        out.append(contentsOf: "]}".utf8)
        return Data(out)
    }

    static func decode(_ data: Data, what: String) throws -> Tree {
        let fast: Tree? = data.withUnsafeBytes { raw in
            var parser = Parser(raw.bindMemory(to: UInt8.self))
            return parser.tree()
        }
        if let fast { return fast }
        return try JSON.decode(Tree.self, data, what: what)
    }

    // MARK: encoding, keys in the order Foundation's `.sortedKeys` gives them

    private static func append(_ node: Node, to out: inout [UInt8]) -> Bool {
        out.append(UInt8(ascii: "{"))
        if let content = node.content {
            key("content", &out, first: true)
            out.append(UInt8(ascii: "["))
            for (i, id) in content.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                hex(id.digest, &out)
            }
            out.append(UInt8(ascii: "]"))
        }
        if let list = node.contentList {
            key("contentList", &out, first: node.content == nil)
            hex(list.digest, &out)
        }
        key("device", &out, first: node.content == nil && node.contentList == nil)
        number(node.device, &out)
        key("gid", &out)
        number(UInt64(node.gid), &out)
        key("inode", &out)
        number(node.inode, &out)
        if let target = node.linkTarget {
            key("linkTarget", &out)
            guard string(target, &out) else { return false }
        }
        key("mode", &out)
        number(UInt64(node.mode), &out)
        key("mtimeNs", &out)
        signed(node.mtimeNs, &out)
        key("name", &out)
        guard string(node.name, &out) else { return false }
        key("size", &out)
        signed(node.size, &out)
        if let subtree = node.subtree {
            key("subtree", &out)
            hex(subtree.digest, &out)
        }
        key("type", &out)
        out.append(UInt8(ascii: "\""))
        out.append(contentsOf: node.type.rawValue.utf8)
        out.append(UInt8(ascii: "\""))
        key("uid", &out)
        number(UInt64(node.uid), &out)
        out.append(UInt8(ascii: "}"))
        return true
    }

    private static func key(_ name: StaticString, _ out: inout [UInt8], first: Bool = false) {
        if !first { out.append(UInt8(ascii: ",")) }
        out.append(UInt8(ascii: "\""))
        name.withUTF8Buffer { out.append(contentsOf: $0) }
        out.append(contentsOf: "\":".utf8)
    }

    private static func hex(_ digest: Digest32, _ out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for word in [digest.w0, digest.w1, digest.w2, digest.w3] {
            for j in 0..<16 {
                let v = UInt8((word >> UInt64(60 - 4 * j)) & 0xF)
                out.append(v < 10 ? 48 + v : 87 + v)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    private static func number(_ value: UInt64, _ out: inout [UInt8]) {
        let start = out.count
        var v = value
        repeat {
            out.append(UInt8(48 + v % 10))
            v /= 10
        } while v > 0
        out[start...].reverse()
    }

    private static func signed(_ value: Int64, _ out: inout [UInt8]) {
        if value < 0 { out.append(UInt8(ascii: "-")) }
        number(value.magnitude, &out)
    }

    /// The string's bytes between quotes, when none of them needs escaping.
    private static func string(_ text: String, _ out: inout [UInt8]) -> Bool {
        out.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            guard byte >= 0x20, byte != UInt8(ascii: "\""), byte != UInt8(ascii: "\\"), byte != UInt8(ascii: "/") else { return false }
            out.append(byte)
        }
        out.append(UInt8(ascii: "\""))
        return true
    }

    // MARK: decoding

    /// A parser for the fast path: nil as soon as the input leaves it.
    private struct Parser {
        let p: UnsafeBufferPointer<UInt8>
        var i = 0

        init(_ p: UnsafeBufferPointer<UInt8>) { self.p = p }

        mutating func tree() -> Tree? {
            guard expect(UInt8(ascii: "{")), let k = rawString(), equal(k, "nodes"), expect(UInt8(ascii: ":")),
                  let nodes = array({ $0.node() }), expect(UInt8(ascii: "}")) else { return nil }
            skipSpace()
            guard i == p.count else { return nil }
            return Tree(nodes: nodes)
        }

        mutating func node() -> Node? {
            guard expect(UInt8(ascii: "{")) else { return nil }
            var name: String?, type: NodeType?
            var mode: UInt64?, uid: UInt64?, gid: UInt64?, device: UInt64?, inode: UInt64?
            var mtime: Int64?, size: Int64?
            var linkTarget: String?, content: [BlobID]?, contentList: BlobID?, subtree: BlobID?
            if peek() == UInt8(ascii: "}") { return nil }
            while true {
                guard let k = rawString(), expect(UInt8(ascii: ":")) else { return nil }
                switch (k.count, k.first ?? 0) {
                case (4, UInt8(ascii: "n")) where equal(k, "name"): guard let v = string() else { return nil }; name = v
                case (4, UInt8(ascii: "t")) where equal(k, "type"):
                    guard let v = rawString(), let t = NodeType(rawValue: String(decoding: v, as: UTF8.self)) else { return nil }
                    type = t
                case (4, UInt8(ascii: "m")) where equal(k, "mode"): guard let v = unsigned() else { return nil }; mode = v
                case (3, UInt8(ascii: "u")) where equal(k, "uid"): guard let v = unsigned() else { return nil }; uid = v
                case (3, UInt8(ascii: "g")) where equal(k, "gid"): guard let v = unsigned() else { return nil }; gid = v
                case (6, UInt8(ascii: "d")) where equal(k, "device"): guard let v = unsigned() else { return nil }; device = v
                case (5, UInt8(ascii: "i")) where equal(k, "inode"): guard let v = unsigned() else { return nil }; inode = v
                case (7, UInt8(ascii: "m")) where equal(k, "mtimeNs"): guard let v = signed() else { return nil }; mtime = v
                case (4, UInt8(ascii: "s")) where equal(k, "size"): guard let v = signed() else { return nil }; size = v
                case (10, UInt8(ascii: "l")) where equal(k, "linkTarget"): guard let v = string() else { return nil }; linkTarget = v
                case (7, UInt8(ascii: "s")) where equal(k, "subtree"): guard let v = id() else { return nil }; subtree = v
                case (11, UInt8(ascii: "c")) where equal(k, "contentList"): guard let v = id() else { return nil }; contentList = v
                case (7, UInt8(ascii: "c")) where equal(k, "content"): guard let v = array({ $0.id() }) else { return nil }; content = v
                default: return nil  // an unknown key, or one given twice in another spelling
                }
                guard let c = next() else { return nil }
                if c == UInt8(ascii: "}") { break }
                guard c == UInt8(ascii: ",") else { return nil }
            }
            guard let name, let type, let mode, let uid, let gid, let mtime, let size, let device, let inode,
                  let mode32 = UInt32(exactly: mode), let uid32 = UInt32(exactly: uid), let gid32 = UInt32(exactly: gid) else { return nil }
            var node = Node(name: name, type: type, mode: mode32, uid: uid32, gid: gid32, mtimeNs: mtime, size: size, device: device,
                            inode: inode, linkTarget: linkTarget, content: content, subtree: subtree)
            node.contentList = contentList
            return node
        }

        /// `[item, item…]`, each read by `item`; nil when one is not.
        mutating func array<T>(_ item: (inout Parser) -> T?) -> [T]? {
            guard expect(UInt8(ascii: "[")) else { return nil }
            var items: [T] = []
            if peek() == UInt8(ascii: "]") {
                i += 1
                return items
            }
            while true {
                guard let value = item(&self) else { return nil }
                items.append(value)
                guard let c = next() else { return nil }
                if c == UInt8(ascii: "]") { return items }
                guard c == UInt8(ascii: ",") else { return nil }
            }
        }

        mutating func skipSpace() {
            while i < p.count, p[i] == 0x20 || p[i] == 0x0A || p[i] == 0x0D || p[i] == 0x09 { i += 1 }
        }

        mutating func peek() -> UInt8? {
            skipSpace()
            return i < p.count ? p[i] : nil
        }

        mutating func next() -> UInt8? {
            guard let c = peek() else { return nil }
            i += 1
            return c
        }

        mutating func expect(_ c: UInt8) -> Bool { next() == c }

        /// A string's bytes without its quotes; nil for one with escapes.
        mutating func rawString() -> UnsafeBufferPointer<UInt8>? {
            guard expect(UInt8(ascii: "\"")) else { return nil }
            let start = i
            while i < p.count {
                let c = p[i]
                if c == UInt8(ascii: "\"") {
                    i += 1
                    return UnsafeBufferPointer(rebasing: p[start..<(i - 1)])
                }
                if c == UInt8(ascii: "\\") || c < 0x20 { return nil }
                i += 1
            }
            return nil
        }

        mutating func string() -> String? {
            guard let raw = rawString() else { return nil }
            // Foundation's decoder refuses invalid UTF-8; so does the fast path (by leaving it).
            guard let text = String(validating: raw, as: UTF8.self) else { return nil }
            return text
        }

        mutating func id() -> BlobID? {
            guard let raw = rawString(), let digest = Digest32(hexUTF8: raw) else { return nil }
            return BlobID(digest)
        }

        mutating func unsigned() -> UInt64? {
            _ = peek()
            return digits()
        }

        /// Decimal digits right here: no sign, no leading zero, no fraction or exponent.
        mutating func digits() -> UInt64? {
            var value: UInt64 = 0
            let start = i
            while i < p.count, p[i] >= 48, p[i] <= 57 {
                let (m, o1) = value.multipliedReportingOverflow(by: 10)
                let (a, o2) = m.addingReportingOverflow(UInt64(p[i] - 48))
                guard !o1, !o2 else { return nil }
                value = a
                i += 1
            }
            guard i > start, i - start == 1 || p[start] != 48 else { return nil }
            if i < p.count, p[i] == UInt8(ascii: ".") || p[i] == UInt8(ascii: "e") || p[i] == UInt8(ascii: "E") { return nil }
            return value
        }

        mutating func signed() -> Int64? {
            guard peek() == UInt8(ascii: "-") else { return unsigned().flatMap { Int64(exactly: $0) } }
            i += 1
            guard let magnitude = digits(), magnitude <= UInt64(Int64.max) + 1 else { return nil }
            return magnitude == UInt64(Int64.max) + 1 ? Int64.min : -Int64(magnitude)
        }

        func equal(_ raw: UnsafeBufferPointer<UInt8>, _ text: StaticString) -> Bool {
            text.withUTF8Buffer { $0.count == raw.count && memcmp($0.baseAddress!, raw.baseAddress!, raw.count) == 0 }
        }
    }
}
