import Foundation

/// 32 bytes held as four words: cheap to hash and compare, no heap allocation.
public struct Digest32: Hashable, Sendable, Comparable {
    public let w0, w1, w2, w3: UInt64

    public init(bytes: UnsafeRawBufferPointer) {
        precondition(bytes.count == 32)
        w0 = bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self).bigEndian
        w1 = bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self).bigEndian
        w2 = bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self).bigEndian
        w3 = bytes.loadUnaligned(fromByteOffset: 24, as: UInt64.self).bigEndian
    }

    public init?(data: Data) {
        guard data.count == 32 else { return nil }
        self = data.withUnsafeBytes { Digest32(bytes: $0) }
    }

    public init?(hex: String) {
        guard hex.utf8.count == 64, hex.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) }) else {
            return nil
        }
        var words: [UInt64] = []
        var index = hex.startIndex
        for _ in 0..<4 {
            let end = hex.index(index, offsetBy: 16)
            guard let word = UInt64(hex[index..<end], radix: 16) else { return nil }
            words.append(word)
            index = end
        }
        (w0, w1, w2, w3) = (words[0], words[1], words[2], words[3])
    }

    public var hex: String {
        [w0, w1, w2, w3].map { word in
            let s = String(word, radix: 16)
            return String(repeating: "0", count: 16 - s.count) + s
        }.joined()
    }

    public var data: Data {
        var out = Data(capacity: 32)
        for word in [w0, w1, w2, w3] { withUnsafeBytes(of: word.bigEndian) { out.append(contentsOf: $0) } }
        return out
    }

    public static func < (a: Digest32, b: Digest32) -> Bool {
        (a.w0, a.w1, a.w2, a.w3) < (b.w0, b.w1, b.w2, b.w3)
    }
}

/// The id of a blob: HMAC-SHA256 of its plaintext under the repository's id key.
public struct BlobID: Hashable, Sendable, Comparable, Codable, CustomStringConvertible {
    public let digest: Digest32
    public init(_ digest: Digest32) { self.digest = digest }
    public init?(hex: String) {
        guard let d = Digest32(hex: hex) else { return nil }
        digest = d
    }
    public var hex: String { digest.hex }
    public var short: String { String(hex.prefix(8)) }
    public var description: String { short }
    public static func < (a: BlobID, b: BlobID) -> Bool { a.digest < b.digest }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let d = Digest32(hex: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "bad blob id"))
        }
        digest = d
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(hex)
    }
}

/// The name of a stored object (pack, index file, snapshot, key): SHA-256 of its stored bytes.
public struct ObjectID: Hashable, Sendable, Comparable, Codable, CustomStringConvertible {
    public let digest: Digest32
    public init(_ digest: Digest32) { self.digest = digest }
    public init?(hex: String) {
        guard let d = Digest32(hex: hex) else { return nil }
        digest = d
    }
    /// The SHA-256 of `bytes`.
    public init(hashing bytes: Data) { digest = Crypto.sha256(bytes) }
    public var hex: String { digest.hex }
    public var short: String { String(hex.prefix(8)) }
    public var description: String { short }
    public static func < (a: ObjectID, b: ObjectID) -> Bool { a.digest < b.digest }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let d = Digest32(hex: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "bad object id"))
        }
        digest = d
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(hex)
    }
}

public typealias PackID = ObjectID
public typealias SnapshotID = ObjectID
