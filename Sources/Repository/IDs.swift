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
        var text = hex
        guard let d = text.withUTF8({ Digest32(hexUTF8: $0) }) else { return nil }
        self = d
    }

    /// 64 lowercase hex digits (metadata holds thousands of ids: no allocation per id).
    init?(hexUTF8 p: UnsafeBufferPointer<UInt8>) {
        guard p.count == 64 else { return nil }
        func word(_ at: Int) -> UInt64? {
            var value: UInt64 = 0
            for i in at..<(at + 16) {
                let c = p[i]
                let digit: UInt8
                switch c {
                case 48...57: digit = c &- 48
                case 97...102: digit = c &- 87
                default: return nil
                }
                value = value << 4 | UInt64(digit)
            }
            return value
        }
        guard let a = word(0), let b = word(16), let c = word(32), let d = word(48) else { return nil }
        (w0, w1, w2, w3) = (a, b, c, d)
    }

    public var hex: String {
        String(unsafeUninitializedCapacity: 64) { out in
            let digits: (UInt64) -> UInt8 = { $0 < 10 ? UInt8(48 + $0) : UInt8(87 + $0) }
            withUnsafeBytes(of: (w0, w1, w2, w3)) { words in
                for k in 0..<4 {
                    let word = words.load(fromByteOffset: k * 8, as: UInt64.self)
                    for j in 0..<16 { out[k * 16 + j] = digits((word >> UInt64(60 - 4 * j)) & 0xF) }
                }
            }
            return 64
        }
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
