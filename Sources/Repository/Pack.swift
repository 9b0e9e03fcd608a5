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

/// Pack layout (docs/format.md §8):
///
///     "CHBP" | version u8 | blob … blob | header envelope | header length u32 LE | "CHBP"
///
/// Version 1 is named by the SHA-256 of all its bytes. Version 2 is named by the SHA-256 of its
/// 5-byte prefix, header and trailer only, and its header lists each blob's AES-GCM tag: the
/// name still commits to every byte (each tag authenticates its blob's ciphertext), and writing
/// a pack needs no second pass over its bytes.
///
/// Each blob is sealed on its own: nonce | AES-256-GCM(codec u8, [raw length u32 if lz4], bytes) | tag,
/// with the blob's type and id as associated data, so a blob cannot be moved or renamed unnoticed.
/// The header lists every blob (type, id, offset, length, raw length), so the index can be
/// rebuilt from packs alone.
enum PackFormat {
    static let magic: [UInt8] = Array("CHBP".utf8)
    /// Pack versions this program reads; it writes 2 into repositories of format version 2
    /// and 1 into those of version 1 (which older releases must still read).
    static let versions: ClosedRange<UInt8> = 1...2
    static let prefixSize = 5
    static let trailerSize = 8
    static let tagSize = Crypto.tagSize
    static func entrySize(_ version: UInt8) -> Int { version >= 2 ? 1 + 32 + 4 + 4 + 4 + tagSize : 1 + 32 + 4 + 4 + 4 }
    static func headerKind(_ version: UInt8) -> Envelope.Kind { version >= 2 ? .packHeaderV2 : .packHeader }

    /// The error for a pack whose bytes do not match its name.
    static func mismatch(_ pack: PackID) -> RepositoryError {
        RepositoryError(.corrupted, "pack \(pack) is corrupted: its content does not match its name")
    }

    /// Checks a pack's first 5 bytes (magic and a version this program reads); returns the version.
    static func checkPrefix(_ prefix: some Collection<UInt8>, pack: PackID) throws -> UInt8 {
        guard prefix.count == prefixSize, prefix.prefix(4).elementsEqual(magic) else { throw mismatch(pack) }
        let version = prefix[prefix.index(prefix.startIndex, offsetBy: 4)]
        guard versions.contains(version) else {
            throw RepositoryError(.unsupported, "pack \(pack) has version \(version), which this program does not read")
        }
        return version
    }

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

    /// The sealed header: version 1 entries without tags (`tags` nil), version 2 entries with
    /// each blob's 16-byte tag (`tags`, in entry order).
    static func encodeHeader(_ entries: [PackedBlob], tags: [UInt8]?, key: SecretKey) -> Data {
        let version: UInt8 = tags == nil ? 1 : 2
        var plain = Data(capacity: entries.count * entrySize(version))
        for (i, e) in entries.enumerated() {
            plain.append(e.type.rawValue)
            plain.append(e.id.digest.data)
            for v in [e.offset, e.length, e.rawLength] { withUnsafeBytes(of: v.littleEndian) { plain.append(contentsOf: $0) } }
            if let tags { plain.append(contentsOf: tags[(i * tagSize)..<((i + 1) * tagSize)]) }
        }
        return Envelope.seal(plain, kind: headerKind(version), key: key, compress: false)
    }

    /// A version 2 pack's name: SHA-256 of its prefix, header and trailer (`tail`).
    static func name(prefix: some Sequence<UInt8>, tail: Data) -> PackID {
        let hash = SHA256Stream()
        Data(prefix).withUnsafeBytes { hash.update($0) }
        tail.withUnsafeBytes { hash.update($0) }
        return PackID(hash.finish())
    }

    /// The header's length from the trailer (the last 8 bytes of `tail`), if the trailer is intact.
    static func headerLength(tail: Data) -> Int? {
        guard tail.count >= trailerSize else { return nil }
        let t = [UInt8](tail.suffix(trailerSize))
        guard Array(t[4..<8]) == magic else { return nil }
        return Int(UInt32(t[0]) | UInt32(t[1]) << 8 | UInt32(t[2]) << 16 | UInt32(t[3]) << 24)
    }

    /// Parses the header from the pack's tail. `tail` is the last bytes of a pack of `packSize` bytes.
    static func decodeHeader(tail: Data, packSize: Int64, key: SecretKey, pack: PackID) throws -> [PackedBlob] {
        try decodeHeaderAndTags(tail: tail, packSize: packSize, key: key, pack: pack).entries
    }

    /// `decodeHeader`, also giving the pack version the header was written for (the envelope's
    /// kind says it: 6 for version 1, 8 for version 2) and, for version 2, the blobs' tags.
    static func decodeHeaderAndTags(tail: Data, packSize: Int64, key: SecretKey, pack: PackID)
        throws -> (version: UInt8, entries: [PackedBlob], tags: [UInt8]) {
        let what = "pack \(pack)"
        guard tail.count >= trailerSize, packSize >= Int64(prefixSize + trailerSize) else {
            throw RepositoryError(.corrupted, "\(what) is truncated")
        }
        guard let headerLength = headerLength(tail: tail) else {
            throw RepositoryError(.corrupted, "\(what) is truncated or not a pack (bad trailer)")
        }
        guard Int64(headerLength + trailerSize + prefixSize) <= packSize, headerLength + trailerSize <= tail.count,
              headerLength > Envelope.headerSize else {
            throw RepositoryError(.corrupted, "\(what) has an invalid header length")
        }
        let sealed = Data(tail.suffix(headerLength + trailerSize).prefix(headerLength))
        let version: UInt8
        switch sealed[sealed.startIndex + 5] {
        case Envelope.Kind.packHeader.rawValue: version = 1
        case Envelope.Kind.packHeaderV2.rawValue: version = 2
        default: throw RepositoryError(.corrupted, "header of \(what) is not a pack header")
        }
        let plain = try Envelope.open(sealed, kind: headerKind(version), key: key, what: "header of \(what)")
        let size = entrySize(version)
        guard plain.count % size == 0 else { throw RepositoryError(.corrupted, "header of \(what) has a bad size") }
        let dataEnd = packSize - Int64(headerLength + trailerSize)
        var tags: [UInt8] = []
        if version >= 2 { tags.reserveCapacity(plain.count / size * tagSize) }
        let entries = try plain.withUnsafeBytes { raw in
            try stride(from: 0, to: raw.count, by: size).map { at in
                guard let type = BlobType(rawValue: raw[at]) else { throw RepositoryError(.corrupted, "header of \(what) has an unknown blob type") }
                let id = BlobID(Digest32(bytes: UnsafeRawBufferPointer(rebasing: raw[(at + 1)..<(at + 33)])))
                func u32(_ o: Int) -> UInt32 { UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: at + o, as: UInt32.self)) }
                let entry = PackedBlob(id: id, type: type, offset: u32(33), length: u32(37), rawLength: u32(41))
                guard Int64(entry.offset) >= Int64(prefixSize), Int64(entry.offset) + Int64(entry.length) <= dataEnd,
                      version < 2 || Int(entry.length) >= tagSize else {
                    throw RepositoryError(.corrupted, "header of \(what) points outside the pack")
                }
                if version >= 2 { tags.append(contentsOf: raw[(at + 45)..<(at + 45 + tagSize)]) }
                return entry
            }
        }
        return (version, entries, tags)
    }

    /// Checks a whole pack against its name (format §2, §8) and returns its header's entries.
    /// Version 1: the SHA-256 of every byte. Version 2: the SHA-256 of prefix, header and
    /// trailer, and every blob's tag equal to the one its header lists (each blob's tag is
    /// checked against its ciphertext when the blob is opened).
    static func verifyWhole(_ data: Data, pack: PackID, key: SecretKey) throws -> [PackedBlob] {
        guard data.count >= prefixSize + trailerSize else { throw RepositoryError(.corrupted, "pack \(pack) is truncated") }
        let version = try checkPrefix(data.prefix(prefixSize), pack: pack)
        if version == 1 {
            guard ObjectID(hashing: data) == pack else { throw mismatch(pack) }
        } else {
            guard let headerLength = headerLength(tail: data), headerLength + trailerSize + prefixSize <= data.count,
                  name(prefix: data.prefix(prefixSize), tail: data.suffix(headerLength + trailerSize)) == pack else { throw mismatch(pack) }
        }
        let (headerVersion, entries, tags) = try decodeHeaderAndTags(tail: data, packSize: Int64(data.count), key: key, pack: pack)
        guard headerVersion == version else {
            throw RepositoryError(.corrupted, "pack \(pack) is corrupted: its header is not one of a version \(version) pack")
        }
        try data.withUnsafeBytes { raw in
            for (i, entry) in entries.enumerated() where version >= 2 {
                let end = Int(entry.offset) + Int(entry.length)
                guard raw[(end - tagSize)..<end].elementsEqual(tags[(i * tagSize)..<((i + 1) * tagSize)]) else {
                    throw RepositoryError(.corrupted, "pack \(pack) is corrupted: blob \(entry.id) does not match the pack's header")
                }
            }
        }
        return entries
    }

    /// How many tail bytes to fetch to read a header: enough for most packs in one request.
    static func tailGuess(packSize: Int64) -> Int64 { min(packSize, 64 << 10) }
}

/// Checks a whole pack against its name as it streams by, first byte to last, without holding
/// it: version 1 hashes every byte; version 2 keeps the prefix and the last `keep` bytes, where
/// header and trailer are. Each blob a reader uses is authenticated by its own tag as well.
final class PackNameCheck {
    private var prefix: [UInt8] = []
    private var hash: SHA256Stream?
    /// Version 2: the pack's bytes from `size - keep` (or the prefix's end) to `size`, the only
    /// ones copied; nothing past `size` is kept.
    private var tail = Data()
    /// Whether a version 2 pack is longer than the prefix and the bytes kept.
    private let trimmed: Bool
    private let keep: Int
    private let size: Int64
    private var position: Int64 = 0

    /// `size`: the pack's size (from the index); a stream of any other length does not match.
    init(keep: Int = 1 << 20, size: Int64) {
        self.keep = keep
        self.size = size
        trimmed = size - Int64(keep) > Int64(PackFormat.prefixSize)
    }

    func update(_ bytes: UnsafeRawBufferPointer, pack: PackID) throws {
        var rest = bytes
        var at = position
        position += Int64(bytes.count)
        if prefix.count < PackFormat.prefixSize {
            let take = min(PackFormat.prefixSize - prefix.count, rest.count)
            prefix.append(contentsOf: rest[0..<take])
            rest = UnsafeRawBufferPointer(rebasing: rest[take...])
            at += Int64(take)
            guard prefix.count == PackFormat.prefixSize else { return }
            if try PackFormat.checkPrefix(prefix, pack: pack) == 1 {
                hash = SHA256Stream()
                prefix.withUnsafeBytes { hash!.update($0) }
            }
        }
        if let hash { return hash.update(rest) }
        func index(_ offset: Int64) -> Int { Int(min(Int64(rest.count), max(0, offset - at))) }
        let (lower, upper) = (index(size - Int64(keep)), index(size))
        if lower < upper { tail.append(contentsOf: rest[lower..<upper]) }
    }

    /// Whether the pack matched its name; nil when a version 2 header was longer than the bytes
    /// kept (over 17,000 blobs at the default 1 MiB), so only its blobs' tags vouch for it.
    func matches(_ pack: PackID) -> Bool? {
        guard prefix.count == PackFormat.prefixSize else { return false }
        guard position == size else { return false }
        if let hash { return PackID(hash.finish()) == pack }
        guard let headerLength = PackFormat.headerLength(tail: tail) else { return false }
        guard headerLength + PackFormat.trailerSize <= tail.count else { return trimmed ? nil : false }
        return PackFormat.name(prefix: prefix, tail: Data(tail.suffix(headerLength + PackFormat.trailerSize))) == pack
    }
}

/// Writes sealed blobs into one pack, straight into a staged file (never the whole pack in memory).
/// `reserve` (under the caller's lock) assigns a blob its place; the bytes are written outside the
/// lock, in parallel, and `finish` waits for every write in flight.
struct PackBuilder: Sendable {
    let file: StagedFile
    let version: UInt8
    let writes = PendingWrites()
    private(set) var count: Int
    private(set) var entries: [PackedBlob] = []
    /// Version 2: each blob's tag (the last 16 bytes of its seal), in entry order.
    private var tags: [UInt8] = []

    init(file: StagedFile, version: UInt8) throws {
        precondition(PackFormat.versions.contains(version), "no such pack version")
        self.file = file
        self.version = version
        try file.write(Data(PackFormat.magic + [version]), at: 0)
        count = PackFormat.prefixSize
    }

    var isEmpty: Bool { entries.isEmpty }

    /// Assigns a sealed blob its offset, and counts its write as pending: the caller writes it
    /// there, then calls `writes.end`. `sealed` is the blob's seal (only its tag is kept).
    mutating func reserve(_ sealed: UnsafeRawBufferPointer, id: BlobID, type: BlobType, rawLength: Int) -> Int64 {
        let offset = count
        entries.append(PackedBlob(id: id, type: type, offset: UInt32(offset), length: UInt32(sealed.count), rawLength: UInt32(rawLength)))
        if version >= 2 { tags.append(contentsOf: sealed[(sealed.count - PackFormat.tagSize)...]) }
        count += sealed.count
        writes.begin()
        return Int64(offset)
    }

    /// Reserves and writes at once (single-threaded callers).
    mutating func add(sealed: Data, id: BlobID, type: BlobType, rawLength: Int) throws {
        let offset = sealed.withUnsafeBytes { reserve($0, id: id, type: type, rawLength: rawLength) }
        do { try file.write(sealed, at: offset) } catch {
            writes.end(failure: error)
            throw error
        }
        writes.end()
    }

    /// Waits for the blobs' writes, appends header and trailer; returns the finished file and the
    /// pack's name (version 2: from prefix, header and trailer; version 1: the file's SHA-256).
    func finish(key: SecretKey) async throws -> (StagedFile, PackID) {
        try await writes.drained()
        let header = PackFormat.encodeHeader(entries, tags: version >= 2 ? tags : nil, key: key)
        var tail = header
        withUnsafeBytes(of: UInt32(header.count).littleEndian) { tail.append(contentsOf: $0) }
        tail.append(contentsOf: PackFormat.magic)
        try file.write(tail, at: Int64(count))
        try file.finish()
        if version >= 2 { return (file, PackFormat.name(prefix: PackFormat.magic + [version], tail: tail)) }
        return (file, PackID(try file.sha256().withUnsafeBytes { Digest32(bytes: $0) }))
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
