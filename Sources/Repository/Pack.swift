import CLZ4
import Storage
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

    /// Reusable buffers for sealing and opening blobs: room for the largest chunk (64 MiB) and
    /// its LZ4 worst case. Only the bytes used become resident. A larger blob (only a tree can
    /// be: a directory of some hundred thousand entries) gets a one-off buffer.
    static let scratch = BufferPool(capacity: (64 << 20) + (1 << 20), keep: 8)

    /// The most bytes `sealBlob` writes for `n` bytes of plaintext.
    static func sealedBound(_ n: Int) -> Int {
        Crypto.nonceSize + 5 + max(n > 0 ? Int(LZ4_compressBound(Int32(n))) : 0, n) + Crypto.tagSize
    }

    /// Compresses (when it helps) and seals one blob's plaintext into `out` (at least
    /// `sealedBound` bytes): LZ4 writes straight into it and AES-GCM encrypts it in place.
    /// Returns the sealed length.
    static func sealBlob(_ raw: UnsafeRawBufferPointer, id: BlobID, type: BlobType, key: SecretKey,
                         into o: UnsafeMutableRawBufferPointer) -> Int {
        let n = raw.count
        precondition(o.count >= sealedBound(n), "sealing buffer too small")
        let bound = n > 0 ? Int(LZ4_compressBound(Int32(n))) : 0
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
        Crypto.sealInPlace(key, o.baseAddress!, bodyLength: bodyLength, aad: blobAAD(id, type))
        return Crypto.overhead + bodyLength
    }

    /// `sealBlob` into a new `Data` (tests, small objects).
    static func sealBlob(_ plaintext: Data, id: BlobID, type: BlobType, key: SecretKey) -> Data {
        plaintext.withUnsafeBytes { raw in
            var out = Data(count: sealedBound(raw.count))
            let length = out.withUnsafeMutableBytes { sealBlob(raw, id: id, type: type, key: key, into: $0) }
            out.count = length
            return out
        }
    }

    /// Decrypts, decompresses and checks one sealed blob against its id, then hands the plaintext
    /// to `body` (valid only during the call; it lives in pooled scratch buffers).
    /// `checkID: false` skips recomputing the keyed id of the plaintext: for a blob whose pack is
    /// checked against its SHA-256 name as well (the AES-GCM tag binds the id in any case).
    static func withOpenedBlob<T>(_ sealed: UnsafeRawBufferPointer, entry: PackedBlob, keys: MasterKeys, pack: PackID,
                                  checkID: Bool = true, _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T {
        guard sealed.count > Crypto.overhead else {
            throw RepositoryError(.corrupted, "blob \(entry.id) in pack \(pack) failed authentication: the pack is corrupted")
        }
        return try scratch.withBuffer(atLeast: sealed.count - Crypto.overhead) { opened in
            guard Crypto.open(keys.encryption, sealed, aad: blobAAD(entry.id, entry.type), into: opened.baseAddress) else {
                throw RepositoryError(.corrupted, "blob \(entry.id) in pack \(pack) failed authentication: the pack is corrupted")
            }
            let bodyLength = sealed.count - Crypto.overhead
            func verified(_ plain: UnsafeRawBufferPointer) throws -> T {
                guard plain.count == Int(entry.rawLength) else {
                    throw RepositoryError(.corrupted, "blob \(entry.id) in pack \(pack) has length \(plain.count), index says \(entry.rawLength)")
                }
                guard !checkID || Crypto.hmac(keys.chunkID, plain) == entry.id.digest else {
                    throw RepositoryError(.corrupted, "blob \(entry.id) in pack \(pack) does not match its id")
                }
                return try body(plain)
            }
            switch Codec(rawValue: opened[0]) {
            case .raw:
                return try verified(UnsafeRawBufferPointer(rebasing: opened[1..<bodyLength]))
            case .lz4:
                let length = bodyLength >= 5 ? Int(UInt32(littleEndian: opened.loadUnaligned(fromByteOffset: 1, as: UInt32.self))) : -1
                // The length is authenticated; LZ4 cannot expand more than 255-fold.
                guard length >= 0, length == Int(entry.rawLength), length <= bodyLength * 255 + 64 else {
                    throw RepositoryError(.corrupted, "blob \(entry.id) in pack \(pack) has invalid compressed data")
                }
                return try scratch.withBuffer(atLeast: length) { plain in
                    guard LZ4.decompress(UnsafeRawBufferPointer(rebasing: opened[5..<bodyLength]),
                                         into: UnsafeMutableRawBufferPointer(rebasing: plain[0..<length])) else {
                        throw RepositoryError(.corrupted, "blob \(entry.id) in pack \(pack) has invalid compressed data")
                    }
                    return try verified(UnsafeRawBufferPointer(rebasing: plain[0..<length]))
                }
            case nil:
                throw RepositoryError(.unsupported, "blob \(entry.id) in pack \(pack) uses an unknown codec")
            }
        }
    }

    /// `withOpenedBlob`, copied out.
    static func openBlob(_ sealed: UnsafeRawBufferPointer, entry: PackedBlob, keys: MasterKeys, pack: PackID,
                         checkID: Bool = true) throws -> Data {
        try withOpenedBlob(sealed, entry: entry, keys: keys, pack: pack, checkID: checkID) { Data($0) }
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

/// Writes sealed blobs into one pack, straight into a staged file (never the whole pack in memory).
/// `reserve` (under the caller's lock) assigns a blob its place; the bytes are written outside the
/// lock, in parallel, and `finish` waits for every write in flight.
struct PackBuilder: Sendable {
    let file: StagedFile
    let writes = PendingWrites()
    private(set) var count: Int
    private(set) var entries: [PackedBlob] = []

    init(file: StagedFile) throws {
        self.file = file
        try file.write(Data(PackFormat.magic + [PackFormat.version]), at: 0)
        count = PackFormat.prefixSize
    }

    var isEmpty: Bool { entries.isEmpty }

    /// Assigns a sealed blob of `length` bytes its offset, and counts its write as pending: the
    /// caller writes it there, then calls `writes.end`.
    mutating func reserve(length: Int, id: BlobID, type: BlobType, rawLength: Int) -> Int64 {
        let offset = count
        entries.append(PackedBlob(id: id, type: type, offset: UInt32(offset), length: UInt32(length), rawLength: UInt32(rawLength)))
        count += length
        writes.begin()
        return Int64(offset)
    }

    /// Reserves and writes at once (single-threaded callers).
    mutating func add(sealed: Data, id: BlobID, type: BlobType, rawLength: Int) throws {
        let offset = reserve(length: sealed.count, id: id, type: type, rawLength: rawLength)
        do { try file.write(sealed, at: offset) } catch {
            writes.end(failure: error)
            throw error
        }
        writes.end()
    }

    /// Waits for the blobs' writes, appends header and trailer; returns the finished file with
    /// its size and SHA-256 computed.
    func finish(key: SecretKey) async throws -> StagedFile {
        try await writes.drained()
        let header = PackFormat.encodeHeader(entries, key: key)
        var tail = header
        withUnsafeBytes(of: UInt32(header.count).littleEndian) { tail.append(contentsOf: $0) }
        tail.append(contentsOf: PackFormat.magic)
        try file.write(tail, at: Int64(count))
        try file.finish()
        return file
    }
}

/// Counts writes in flight into one pack and remembers the first that failed.
final class PendingWrites: Sendable {
    private struct State {
        var pending = 0
        var failure: (any Error & Sendable)?
        var waiter: CheckedContinuation<Void, Never>?
    }
    private let state = Locked(State())

    func begin() { state.withLock { $0.pending += 1 } }

    func end(failure: (any Error)? = nil) {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.pending -= 1
            if let failure, s.failure == nil { s.failure = failure }
            guard s.pending == 0 else { return nil }
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume()
    }

    /// Returns when no write is in flight; throws the first failure.
    func drained() async throws {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.pending == 0 { return true }
                s.waiter = continuation
                return false
            }
            if now { continuation.resume() }
        }
        if let failure = state.value.failure { throw failure }
    }
}
