import CLZ4
import Foundation

/// What a blob holds. Values are part of the format.
public enum BlobType: UInt8, Sendable, Codable, CustomStringConvertible {
    case data = 0
    case tree = 1
    public var description: String { self == .data ? "data" : "tree" }
}

/// Where one blob sits inside a pack.
public struct PackedBlob: Hashable, Sendable, Codable {
    public let id: BlobID
    public let type: BlobType
    public let offset: UInt32
    public let length: UInt32
    /// The plaintext length, before compression.
    public let rawLength: UInt32
}

/// Pack layout (docs/format.md):
///
///     "CHBP" | version u8 | blob … blob | header envelope | header length u32 LE | "CHBP"
///
/// Each blob is sealed on its own: nonce | AES-256-GCM(codec u8, [raw length u32 if lz4], bytes) | tag,
/// with the blob's type and id as associated data, so a blob cannot be moved or renamed unnoticed.
/// The header lists every blob (type, id, offset, length, raw length), so the index can be
/// rebuilt from packs alone.
enum PackFormat {
    static let magic: [UInt8] = Array("CHBP".utf8)
    static let version: UInt8 = 1
    static let prefixSize = 5
    static let trailerSize = 8
    static let entrySize = 1 + 32 + 4 + 4 + 4

    static func blobAAD(_ id: BlobID, _ type: BlobType) -> Data {
        var aad = Data([type.rawValue])
        aad.append(id.digest.data)
        return aad
    }

    /// Compresses (when it helps) and seals one blob's plaintext, in one buffer: LZ4 writes
    /// straight into it and AES-GCM encrypts it in place.
    static func sealBlob(_ plaintext: Data, id: BlobID, type: BlobType, key: SecretKey) -> Data {
        let aad = blobAAD(id, type)
        return plaintext.withUnsafeBytes { raw -> Data in
            let n = raw.count
            let bound = n > 0 ? Int(LZ4_compressBound(Int32(n))) : 0
            var out = Data(count: Crypto.nonceSize + 5 + max(bound, n) + Crypto.tagSize)
            let length = out.withUnsafeMutableBytes { o -> Int in
                let body = o.baseAddress! + Crypto.nonceSize
                let packed = n > 0 ? LZ4.compress(raw, into: UnsafeMutableRawBufferPointer(start: body + 5, count: bound)) : 0
                let bodyLength: Int
                if packed > 0 && packed + 5 < n {
                    body.storeBytes(of: Codec.lz4.rawValue, as: UInt8.self)
                    body.storeBytes(of: UInt32(n).littleEndian, toByteOffset: 1, as: UInt32.self)
                    bodyLength = 5 + packed
                } else {
                    body.storeBytes(of: Codec.raw.rawValue, as: UInt8.self)
                    if n > 0 { (body + 1).copyMemory(from: raw.baseAddress!, byteCount: n) }
                    bodyLength = 1 + n
                }
                Crypto.sealInPlace(key, o.baseAddress!, bodyLength: bodyLength, aad: aad)
                return Crypto.overhead + bodyLength
            }
            out.count = length
            return out
        }
    }

    /// Decrypts, decompresses and checks one sealed blob against its id.
    static func openBlob(_ sealed: UnsafeRawBufferPointer, entry: PackedBlob, keys: MasterKeys, pack: PackID) throws -> Data {
        guard let body = Crypto.open(keys.encryption, sealed, aad: blobAAD(entry.id, entry.type)), !body.isEmpty else {
            throw RepositoryError(.corrupted, "blob \(entry.id) in pack \(pack) failed authentication: the pack is corrupted")
        }
        let plain: Data
        switch Codec(rawValue: body[body.startIndex]) {
        case .raw:
            plain = body.dropFirst()
        case .lz4:
            guard body.count >= 5,
                  let out = body.withUnsafeBytes({ raw -> Data? in
                      let length = Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 1, as: UInt32.self)))
                      return LZ4.decompress(UnsafeRawBufferPointer(rebasing: raw[5...]), length: length)
                  }) else {
                throw RepositoryError(.corrupted, "blob \(entry.id) in pack \(pack) has invalid compressed data")
            }
            plain = out
        case nil:
            throw RepositoryError(.unsupported, "blob \(entry.id) in pack \(pack) uses an unknown codec")
        }
        guard plain.count == Int(entry.rawLength) else {
            throw RepositoryError(.corrupted, "blob \(entry.id) in pack \(pack) has length \(plain.count), index says \(entry.rawLength)")
        }
        let actual = plain.withUnsafeBytes { Crypto.hmac(keys.chunkID, $0) }
        guard actual == entry.id.digest else {
            throw RepositoryError(.corrupted, "blob \(entry.id) in pack \(pack) does not match its id")
        }
        return Data(plain)
    }

    static func encodeHeader(_ entries: [PackedBlob], key: SecretKey) -> Data {
        var plain = Data(capacity: entries.count * entrySize)
        for e in entries {
            plain.append(e.type.rawValue)
            plain.append(e.id.digest.data)
            for v in [e.offset, e.length, e.rawLength] { withUnsafeBytes(of: v.littleEndian) { plain.append(contentsOf: $0) } }
        }
        return Envelope.seal(plain, kind: .packHeader, key: key, compress: false)
    }

    /// Parses the header from the pack's tail. `tail` is the last bytes of a pack of `packSize` bytes.
    static func decodeHeader(tail: Data, packSize: Int64, key: SecretKey, pack: PackID) throws -> [PackedBlob] {
        let what = "pack \(pack)"
        guard tail.count >= trailerSize, packSize >= Int64(prefixSize + trailerSize) else {
            throw RepositoryError(.corrupted, "\(what) is truncated")
        }
        let t = [UInt8](tail.suffix(trailerSize))
        guard Array(t[4..<8]) == magic else { throw RepositoryError(.corrupted, "\(what) is truncated or not a pack (bad trailer)") }
        let headerLength = Int(UInt32(t[0]) | UInt32(t[1]) << 8 | UInt32(t[2]) << 16 | UInt32(t[3]) << 24)
        guard Int64(headerLength + trailerSize + prefixSize) <= packSize, headerLength + trailerSize <= tail.count else {
            throw RepositoryError(.corrupted, "\(what) has an invalid header length")
        }
        let sealed = tail.suffix(headerLength + trailerSize).prefix(headerLength)
        let plain = try Envelope.open(Data(sealed), kind: .packHeader, key: key, what: "header of \(what)")
        guard plain.count % entrySize == 0 else { throw RepositoryError(.corrupted, "header of \(what) has a bad size") }
        let dataEnd = packSize - Int64(headerLength + trailerSize)
        return try plain.withUnsafeBytes { raw in
            try stride(from: 0, to: raw.count, by: entrySize).map { at in
                guard let type = BlobType(rawValue: raw[at]) else { throw RepositoryError(.corrupted, "header of \(what) has an unknown blob type") }
                let id = BlobID(Digest32(bytes: UnsafeRawBufferPointer(rebasing: raw[(at + 1)..<(at + 33)])))
                func u32(_ o: Int) -> UInt32 { UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: at + o, as: UInt32.self)) }
                let entry = PackedBlob(id: id, type: type, offset: u32(33), length: u32(37), rawLength: u32(41))
                guard Int64(entry.offset) >= Int64(prefixSize), Int64(entry.offset) + Int64(entry.length) <= dataEnd else {
                    throw RepositoryError(.corrupted, "header of \(what) points outside the pack")
                }
                return entry
            }
        }
    }

    /// How many tail bytes to fetch to read a header: enough for most packs in one request.
    static func tailGuess(packSize: Int64) -> Int64 { min(packSize, 64 << 10) }
}

/// Accumulates sealed blobs into one pack in memory.
struct PackBuilder {
    private(set) var bytes: Data
    private(set) var entries: [PackedBlob] = []
    private(set) var rawBytes: Int64 = 0

    /// `capacity`: bytes to reserve up front, so the pack never reallocates while it grows.
    init(capacity: Int = 0) {
        bytes = Data(capacity: max(capacity, 64))
        bytes.append(contentsOf: PackFormat.magic + [PackFormat.version])
    }

    var isEmpty: Bool { entries.isEmpty }
    var count: Int { bytes.count }

    mutating func add(sealed: Data, id: BlobID, type: BlobType, rawLength: Int) {
        entries.append(PackedBlob(id: id, type: type, offset: UInt32(bytes.count), length: UInt32(sealed.count),
                                  rawLength: UInt32(rawLength)))
        bytes.append(sealed)
        rawBytes += Int64(rawLength)
    }

    /// Appends header and trailer and hands out the finished pack (without copying it).
    mutating func finish(key: SecretKey) -> Data {
        let header = PackFormat.encodeHeader(entries, key: key)
        bytes.append(header)
        withUnsafeBytes(of: UInt32(header.count).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: PackFormat.magic)
        defer { bytes = Data() }
        return bytes
    }
}
