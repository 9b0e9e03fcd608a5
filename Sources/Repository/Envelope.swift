import Foundation

/// The self-describing, encrypted form of every metadata object (config, index files, snapshots,
/// locks, the master key inside a key file, pack headers):
///
///     "CHBK" | version u8 | kind u8 | cipher u8 | codec u8 | nonce(12) ciphertext tag(16)
///
/// The 8-byte header is authenticated (AAD), so changing a kind, version or codec is detected.
/// With codec lz4 the plaintext starts with its decompressed length (u32, little endian).
enum Envelope {
    static let magic: [UInt8] = Array("CHBK".utf8)
    static let version: UInt8 = 1
    static let cipherAES256GCM: UInt8 = 1
    static let headerSize = 8

    /// Kinds are part of the format: never reuse a value.
    enum Kind: UInt8 {
        case config = 1, index = 2, snapshot = 3, lock = 4, masterKey = 5, packHeader = 6, tree = 7, packHeaderV2 = 8
        var name: String {
            switch self {
            case .config: "config"
            case .index: "index"
            case .snapshot: "snapshot"
            case .lock: "lock"
            case .masterKey: "key"
            case .packHeader, .packHeaderV2: "pack header"
            case .tree: "tree"
            }
        }
    }

    static func seal(_ plaintext: Data, kind: Kind, key: SecretKey, compress: Bool = true) -> Data {
        var codec = Codec.raw
        var body = plaintext
        if compress, let packed = plaintext.withUnsafeBytes({ LZ4.compress($0) }) {
            codec = .lz4
            body = Data(capacity: packed.count + 4)
            withUnsafeBytes(of: UInt32(plaintext.count).littleEndian) { body.append(contentsOf: $0) }
            body.append(packed)
        }
        let header = Data(magic + [version, kind.rawValue, cipherAES256GCM, codec.rawValue])
        return header + Crypto.seal(key, body, aad: header)
    }

    /// Opens an envelope of the expected kind; `what` names the object in error messages.
    static func open(_ stored: Data, kind: Kind, key: SecretKey, what: String) throws -> Data {
        guard stored.count >= headerSize + Crypto.overhead else {
            throw RepositoryError(.corrupted, "\(what) is truncated (\(stored.count) bytes)")
        }
        let header = stored.prefix(headerSize)
        let h = [UInt8](header)
        guard Array(h[0..<4]) == magic else {
            throw RepositoryError(.corrupted, "\(what) is not a che-backup object (bad magic)")
        }
        guard h[4] == version else {
            throw RepositoryError(.unsupported, "\(what) has format version \(h[4]); this program reads version \(version)")
        }
        guard h[5] == kind.rawValue else {
            throw RepositoryError(.corrupted, "\(what) is a \(Kind(rawValue: h[5])?.name ?? "unknown object"), expected a \(kind.name)")
        }
        guard h[6] == cipherAES256GCM, let codec = Codec(rawValue: h[7]) else {
            throw RepositoryError(.unsupported, "\(what) uses unknown cipher \(h[6]) or codec \(h[7])")
        }
        guard let body = stored.withUnsafeBytes({ Crypto.open(key, UnsafeRawBufferPointer(rebasing: $0[headerSize...]), aad: Data(header)) }) else {
            throw RepositoryError(.corrupted, "\(what) failed authentication: the data was modified or the key is wrong")
        }
        switch codec {
        case .raw:
            return body
        case .lz4:
            guard body.count >= 4 else { throw RepositoryError(.corrupted, "\(what): compressed body too short") }
            let length = body.withUnsafeBytes { Int(UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self))) }
            guard let plain = body.withUnsafeBytes({ LZ4.decompress(UnsafeRawBufferPointer(rebasing: $0[4...]), length: length) }) else {
                throw RepositoryError(.corrupted, "\(what): invalid compressed data")
            }
            return plain
        }
    }
}

/// JSON coding shared by all metadata objects.
enum JSON {
    static func encode<T: Encodable>(_ value: T) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var c = encoder.singleValueContainer()
            try c.encode(formatTime(date))
        }
        do { return try encoder.encode(value) } catch { preconditionFailure("encoding \(T.self) failed: \(error)") }
    }

    static func decode<T: Decodable>(_ type: T.Type, _ data: Data, what: String) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let date = parseTime(text) else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "bad time \(text)"))
            }
            return date
        }
        do {
            return try decoder.decode(type, from: data)
        } catch {
            throw RepositoryError(.corrupted, "\(what) cannot be decoded: \(error)")
        }
    }
}

/// RFC 3339 with fractional seconds, UTC.
public func formatTime(_ date: Date) -> String {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return f.string(from: date)
}

public func parseTime(_ text: String) -> Date? {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    if let d = f.date(from: text) { return d }
    f.formatOptions = [.withInternetDateTime]
    return f.date(from: text)
}
