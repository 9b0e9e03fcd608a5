import COpenSSL
import Foundation
@testable import Repository
import Storage
import Testing
import TestSupport

@Suite struct CryptoTests {
    let key = SecretKey.random()

    @Test func sealOpenRoundTripAndFreshNonces() throws {
        let plain = Data("postgres dump".utf8)
        let a = Crypto.seal(key, plain, aad: Data("x".utf8))
        let b = Crypto.seal(key, plain, aad: Data("x".utf8))
        #expect(a != b, "two seals of the same plaintext must differ (random nonces)")
        #expect(a.count == plain.count + Crypto.overhead)
        #expect(Crypto.open(key, a, aad: Data("x".utf8)) == plain)
    }

    @Test func everyFlippedByteIsDetected() throws {
        let sealed = Crypto.seal(key, Data(repeating: 0x41, count: 64))
        for i in 0..<sealed.count {
            var bad = sealed
            bad[i] ^= 0x01
            #expect(Crypto.open(key, bad) == nil, "flip at \(i) went unnoticed")
        }
        #expect(Crypto.open(key, sealed, aad: Data("other".utf8)) == nil)
        #expect(Crypto.open(SecretKey.random(), sealed) == nil)
        #expect(Crypto.open(key, sealed.prefix(20)) == nil)
    }

    @Test func hmacIsKeyed() {
        let data = Data("same content".utf8)
        #expect(Crypto.hmac(key, data) == Crypto.hmac(key, data))
        #expect(Crypto.hmac(key, data) != Crypto.hmac(SecretKey.random(), data))
    }

    @Test func sha256KnownAnswer() {
        #expect(Crypto.sha256(Data("abc".utf8)).hex == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    /// RFC 7914 §12, vectors 1 to 3 (the fourth needs 1 GiB), whole outputs, with the lanes on
    /// one thread and on several.
    @Test(arguments: [1, 3, 16])
    func scryptKnownAnswers(threads: Int) {
        let vectors: [(String, String, UInt64, UInt64, UInt64, String)] = [
            ("", "", 16, 1, 1,
             "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442fcd0069ded0948f8326a753a0fc81f17e8d3e0fb2e0d3628cf35e20c38d18906"),
            ("password", "NaCl", 1024, 8, 16,
             "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b3731622eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640"),
            ("pleaseletmein", "SodiumChloride", 16384, 8, 1,
             "7023bdcb3afd7348461c06cd81fd38ebfda8fbba904f8e3ea9b543f6545da1f2d5432955613f0fcf62d49705242a9af9e61e85dc0d651e40dfcf017b45575887"),
        ]
        for (password, salt, n, r, p, expected) in vectors {
            let out = Crypto.scrypt(password: password, salt: Data(salt.utf8), n: n, r: r, p: p, length: 64, threads: threads)
            #expect(out?.map { String(format: "%02x", $0) }.joined() == expected, "N=\(n) r=\(r) p=\(p)")
        }
    }

    /// The lanes computed on several threads give OpenSSL's EVP_PBE_scrypt bytes, for parameters,
    /// passwords, salts, lengths and thread counts drawn at random (including more threads than
    /// lanes, and the default p = 4).
    @Test func scryptMatchesOpenSSL() {
        var gen = SeededBytes(seed: 7914)
        for round in 0..<40 {
            let choice = gen.data(6)
            let n = UInt64(1) << (1 + Int(choice[0]) % 11)
            let r = UInt64(1 + Int(choice[1]) % 8)
            let p = round == 0 ? 4 : UInt64(1 + Int(choice[2]) % 6)
            let threads = 1 + Int(choice[3]) % 5
            let length = 1 + Int(choice[4]) % 96
            let password = String(decoding: gen.data(Int(choice[5]) % 24).map { 0x20 + $0 % 0x5f }, as: UTF8.self)
            let salt = gen.data(Int(choice[5]) % 40)
            let ours = Crypto.scrypt(password: password, salt: salt, n: n, r: r, p: p, length: length, threads: threads)
            let openssl = Self.opensslScrypt(password: password, salt: salt, n: n, r: r, p: p, length: length)
            #expect(ours != nil && ours == openssl, "N=\(n) r=\(r) p=\(p) threads=\(threads) length=\(length)")
        }
    }

    /// A table the machine cannot give (512 GiB: N = 2^22, r = 1024) is no key, not a crash, on
    /// one thread and when a second thread's allocation fails. Only where the kernel refuses
    /// such an allocation outright (overcommit mode 0 or 2), not where it would hand it out.
    @Test(.enabled(if: (try? String(contentsOfFile: "/proc/sys/vm/overcommit_memory", encoding: .utf8))?
                    .trimmingCharacters(in: .whitespacesAndNewlines) != "1",
                   "the kernel overcommits every allocation"))
    func scryptReportsMemoryItCannotHave() {
        for (p, threads) in [(UInt64(1), 1), (2, 2)] {
            #expect(Crypto.scrypt(password: "x", salt: Data("s".utf8), n: 1 << 22, r: 1024, p: p, length: 32,
                                  threads: threads) == nil)
        }
    }

    /// OpenSSL's EVP_PBE_scrypt, lanes one after the other: the reference `Crypto.scrypt` is held to.
    static func opensslScrypt(password: String, salt: Data, n: UInt64, r: UInt64, p: UInt64, length: Int) -> Data? {
        var out = Data(count: length)
        let pw = Array(password.utf8)
        let ok = out.withUnsafeMutableBytes { o in
            salt.withUnsafeBytes { s in chb_scrypt(pw, pw.count, s.baseAddress, s.count, n, r, p, o.baseAddress, length) }
        }
        return ok == 1 ? out : nil
    }

    /// Parameters scrypt does not define give no key rather than a wrong one.
    @Test func scryptRefusesUndefinedParameters() {
        #expect(Crypto.scrypt(password: "x", salt: Data(), n: 3, r: 8, p: 1, length: 32) == nil)
        #expect(Crypto.scrypt(password: "x", salt: Data(), n: 1, r: 8, p: 1, length: 32) == nil)
        #expect(Crypto.scrypt(password: "x", salt: Data(), n: 16, r: 0, p: 1, length: 32) == nil)
        #expect(Crypto.scrypt(password: "x", salt: Data(), n: 16, r: 8, p: 0, length: 32) == nil)
    }
}

@Suite struct IDTests {
    @Test func hexParsingIsStrict() {
        let good = String(repeating: "0123456789abcdef", count: 4)
        #expect(ObjectID(hex: good)?.hex == good)
        #expect(ObjectID(hex: good.uppercased()) == nil)
        #expect(ObjectID(hex: String(good.dropLast())) == nil)
        // 64 bytes of UTF-8 but fewer characters: must be refused, not crash.
        #expect(ObjectID(hex: String(repeating: "a", count: 48) + String(repeating: "é", count: 8)) == nil)
        #expect(ObjectID(hex: String(repeating: "g", count: 64)) == nil)
        #expect(ObjectID(hex: String(good.dropLast()) + "/") == nil && ObjectID(hex: "`" + String(good.dropFirst())) == nil)
        var gen = SeededBytes(seed: 1)
        for _ in 0..<50 {
            let bytes = gen.data(32)
            let expected = bytes.map { String(format: "%02x", $0) }.joined()
            let id = ObjectID(hashing: bytes)
            let fromBytes = ObjectID(Digest32(data: bytes)!)
            #expect(fromBytes.hex == expected)
            #expect(ObjectID(hex: expected) == fromBytes && ObjectID(hex: id.hex) == id)
        }
    }
}

@Suite struct CompressionTests {
    @Test func textShrinksAndRoundTrips() throws {
        var gen = SeededBytes(seed: 1)
        let text = gen.text(200_000)
        let packed = try #require(text.withUnsafeBytes { LZ4.compress($0) })
        #expect(packed.count < text.count / 2)
        #expect(packed.withUnsafeBytes { LZ4.decompress($0, length: text.count) } == text)
        #expect(packed.withUnsafeBytes { LZ4.decompress($0, length: text.count + 1) } == nil)
    }

    @Test func randomDataIsStoredRaw() {
        var gen = SeededBytes(seed: 2)
        #expect(gen.data(100_000).withUnsafeBytes { LZ4.compress($0) } == nil)
    }
}

@Suite struct ChunkerTests {
    let params = ChunkerParameters(minSize: 2 << 10, averageSize: 8 << 10, maxSize: 32 << 10)

    func chunks(_ data: Data, _ chunker: Chunker) -> [Data] {
        var out: [Data] = []
        var offset = 0
        for len in chunker.split(data) {
            out.append(data.subdata(in: offset..<offset + len))
            offset += len
        }
        return out
    }

    @Test func respectsBoundsAndCoversInput() {
        let chunker = Chunker(parameters: params, key: .random())
        var gen = SeededBytes(seed: 3)
        let data = gen.data(2 << 20)
        let lengths = chunker.split(data)
        #expect(lengths.reduce(0, +) == data.count)
        #expect(lengths.dropLast().allSatisfy { $0 >= params.minSize && $0 <= params.maxSize })
        let average = data.count / lengths.count
        #expect(average > params.averageSize / 2 && average < params.averageSize * 2, "average \(average)")
        #expect(Chunker(parameters: params, key: .random()).split(Data(repeating: 0, count: 100_000)).allSatisfy { $0 <= params.maxSize })
    }

    /// An insertion re-cuts only the chunks around it: the chunks before and after are the
    /// original's, and the changed ones form one run. How far the re-cutting reaches depends on
    /// the key (a new cut can land within the minimum size of an old one and skip it), so this
    /// runs over 16 fixed keys, deterministically, and bounds the worst case and the mean.
    @Test func anInsertionChangesOnlyNearbyChunks() {
        var gen = SeededBytes(seed: 4)
        let original = gen.data(2 << 20)
        var edited = original
        edited.insert(contentsOf: gen.data(100), at: 1 << 20)
        var counts: [Int] = []
        for k in 0..<16 {
            var keyBytes = SeededBytes(seed: 100 + UInt64(k))
            let chunker = Chunker(parameters: params, key: SecretKey(keyBytes.data(32))!)
            let before = chunks(original, chunker), after = chunks(edited, chunker)
            let same = zip(before, after).prefix { $0 == $1 }.count
            let sameEnd = zip(before.reversed(), after.reversed()).prefix { $0 == $1 }.count
            let changed = after.count - same - sameEnd
            let insertionChunk = after.prefix(same).reduce(0) { $0 + $1.count }
            #expect(same > 0 && sameEnd > 0 && changed >= 1, "key \(k): \(same) leading, \(sameEnd) trailing of \(after.count)")
            #expect(insertionChunk <= 1 << 20, "key \(k): the changed chunks begin after the insertion, at byte \(insertionChunk)")
            #expect(changed <= 6, "key \(k): \(changed) of \(after.count) chunks changed after a 100-byte insertion")
            counts.append(changed)
        }
        #expect(Double(counts.reduce(0, +)) / Double(counts.count) <= 3, "chunks changed per key: \(counts)")
    }

    /// The cut points are FastCDC's with normalized chunking, written out here independently:
    /// the stricter mask before the average size, the looser one after, min and max bounds.
    @Test func cutPointsMatchTheByteAtATimeDefinition() {
        func reference(_ c: Chunker, _ bytes: UnsafeRawBufferPointer) -> Int {
            let p = c.parameters
            let n = min(bytes.count, p.maxSize)
            if n <= p.minSize { return n }
            var h: UInt64 = 0
            for i in p.minSize..<n {
                h = (h << 1) &+ c.gear[Int(bytes[i])]
                if h & (i < p.averageSize ? c.maskSmall : c.maskLarge) == 0 { return i + 1 }
            }
            return n
        }
        var gen = SeededBytes(seed: 9)
        for (p, size) in [(params, 3 << 20), (ChunkerParameters(minSize: 64, averageSize: 256, maxSize: 1001), 200_000),
                          (ChunkerParameters(minSize: 65, averageSize: 128, maxSize: 130), 20_001)] {
            let chunker = Chunker(parameters: p, key: .random())
            let data = gen.data(size) + gen.text(size / 2) + Data(repeating: 7, count: p.maxSize * 3 + 1)
            var expected: [Int] = []
            data.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let len = reference(chunker, UnsafeRawBufferPointer(rebasing: raw[offset...]))
                    expected.append(len)
                    offset += len
                }
            }
            let got = chunker.split(data)
            #expect(got == expected)
            #expect(Set(got).count > 3 && got.contains { $0 % 2 == 1 } && got.contains { $0 % 2 == 0 }, "cuts at odd and even offsets")
        }
    }

    @Test func boundariesDependOnTheKey() {
        var gen = SeededBytes(seed: 5)
        let data = gen.data(1 << 20)
        #expect(Chunker(parameters: params, key: .random()).split(data) != Chunker(parameters: params, key: .random()).split(data))
    }

    @Test func invalidParametersAreRefused() {
        #expect(throws: RepositoryError.self) { try ChunkerParameters(minSize: 10, averageSize: 1000, maxSize: 5000).validate() }
        #expect(throws: RepositoryError.self) { try ChunkerParameters(minSize: 4096, averageSize: 4096, maxSize: 8192).validate() }
    }
}

@Suite struct FormatTests {
    let keys = MasterKeys.generate()

    @Test func envelopeDetectsTamperingAndWrongKinds() throws {
        let sealed = Envelope.seal(Data("{\"a\":1}".utf8), kind: .snapshot, key: keys.encryption)
        #expect(try Envelope.open(sealed, kind: .snapshot, key: keys.encryption, what: "x") == Data("{\"a\":1}".utf8))
        #expect(throws: RepositoryError.self) { try Envelope.open(sealed, kind: .index, key: keys.encryption, what: "x") }
        for i in [0, 4, 5, 6, 7, 8, sealed.count - 1] {
            var bad = sealed
            bad[i] ^= 0x20
            #expect(throws: RepositoryError.self) { try Envelope.open(bad, kind: .snapshot, key: keys.encryption, what: "x") }
        }
        #expect(throws: RepositoryError.self) { try Envelope.open(sealed.prefix(10), kind: .snapshot, key: keys.encryption, what: "x") }
    }

    @Test(arguments: [UInt8(1), 2])
    func packRoundTripAndHeaderRebuild(version: UInt8) async throws {
        var gen = SeededBytes(seed: 6)
        var builder = try PackBuilder(file: StagedFile.temporary(), version: version)
        var blobs: [(BlobID, Data)] = []
        for i in 0..<10 {
            let plain = i % 2 == 0 ? gen.text(5000 + i) : gen.data(5000 + i)
            let id = BlobID(Crypto.hmac(keys.chunkID, plain))
            try builder.add(sealed: PackFormat.sealBlob(plain, id: id, type: .data, key: keys.encryption), id: id, type: .data,
                            rawLength: plain.count)
            blobs.append((id, plain))
        }
        let (file, packID) = try await builder.finish(key: keys.encryption)
        let pack = try file.readAll()
        let headerLength = Int(pack.suffix(8).prefix(4).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) })
        #expect(Int64(pack.count) == file.finishedSize && pack.count == builder.count + headerLength + 8,
                "the file holds the blobs, the header and the trailer")
        #expect(pack[4] == version)
        if version == 1 {
            #expect(packID == ObjectID(hashing: pack), "a version 1 pack is named by the SHA-256 of all its bytes")
        } else {
            #expect(packID == ObjectID(hashing: pack.prefix(5) + pack.suffix(headerLength + 8)),
                    "a version 2 pack is named by the SHA-256 of its prefix, header and trailer")
        }
        let (headerVersion, entries, tags) = try PackFormat.decodeHeaderAndTags(tail: pack, packSize: Int64(pack.count), key: keys.encryption, pack: packID)
        #expect(headerVersion == version)
        #expect(entries.map(\.id) == blobs.map(\.0))
        #expect(try PackFormat.verifyWhole(pack, pack: packID, key: keys.encryption) == entries)
        if version == 2 {
            #expect(tags == entries.flatMap { pack[Int($0.offset + $0.length) - 16..<Int($0.offset + $0.length)] },
                    "the header lists every blob's tag")
        } else {
            #expect(tags.isEmpty)
        }
        for (entry, (_, plain)) in zip(entries, blobs) {
            let got = try pack.withUnsafeBytes {
                try PackFormat.openBlob(UnsafeRawBufferPointer(rebasing: $0[Int(entry.offset)..<Int(entry.offset + entry.length)]),
                                        entry: entry, keys: keys, pack: packID)
            }
            #expect(got == plain)
        }
        // A blob presented under another id (moved or swapped) fails.
        let e = entries[0]
        let moved = PackedBlob(id: entries[1].id, type: .data, offset: e.offset, length: e.length, rawLength: e.rawLength)
        #expect(throws: RepositoryError.self) {
            try pack.withUnsafeBytes {
                try PackFormat.openBlob(UnsafeRawBufferPointer(rebasing: $0[Int(e.offset)..<Int(e.offset + e.length)]),
                                        entry: moved, keys: keys, pack: packID)
            }
        }
        // A blob sealed by a key holder under an id that is not its plaintext's (a writer's bug)
        // passes AES-GCM but fails the id check that check --read-data and range restores make.
        let wrongID = blobs[1].0
        let mislabeled = PackFormat.sealBlob(blobs[0].1, id: wrongID, type: .data, key: keys.encryption)
        let entry = PackedBlob(id: wrongID, type: .data, offset: 0, length: UInt32(mislabeled.count), rawLength: UInt32(blobs[0].1.count))
        #expect(throws: RepositoryError.self) {
            try mislabeled.withUnsafeBytes { try PackFormat.openBlob($0, entry: entry, keys: keys, pack: packID) }
        }
        let trusted = try mislabeled.withUnsafeBytes {
            try PackFormat.withOpenedBlob($0, entry: entry, keys: keys, pack: packID, checkID: false) { Data($0) }
        }
        #expect(trusted == blobs[0].1, "without the id check only the tag is checked (whole-pack restores rely on the pack's name too)")
        // A truncated pack has no readable header.
        #expect(throws: RepositoryError.self) {
            try PackFormat.decodeHeader(tail: pack.prefix(pack.count - 3), packSize: Int64(pack.count - 3), key: keys.encryption, pack: packID)
        }
    }

    /// A pack of mixed blobs, its entries and the blobs' plaintext.
    func makePack(seed: UInt64, version: UInt8 = 2) async throws -> (Data, PackID, [PackedBlob], [Data]) {
        var gen = SeededBytes(seed: seed)
        var builder = try PackBuilder(file: StagedFile.temporary(), version: version)
        var plains: [Data] = []
        for i in 0..<12 {
            let plain = i % 3 == 0 ? gen.text(3000 + 97 * i) : gen.data(1 + 211 * i)
            let id = BlobID(Crypto.hmac(keys.chunkID, plain))
            try builder.add(sealed: PackFormat.sealBlob(plain, id: id, type: .data, key: keys.encryption), id: id, type: .data,
                            rawLength: plain.count)
            plains.append(plain)
        }
        let (file, packID) = try await builder.finish(key: keys.encryption)
        let pack = try file.readAll()
        let entries = try PackFormat.decodeHeader(tail: pack, packSize: Int64(pack.count), key: keys.encryption, pack: packID)
        return (pack, packID, entries, plains)
    }

    /// Feeds `bytes` to a PackStream in pieces of the given sizes (cycled) and returns the
    /// plaintext of every blob it handed over, by blob index.
    func streamPieces(_ bytes: Data, sizes: [Int], stream: PackStream) throws {
        var at = 0
        var turn = 0
        try bytes.withUnsafeBytes { raw in
            while at < raw.count {
                let n = min(sizes[turn % sizes.count], raw.count - at)
                try stream.consume(UnsafeRawBufferPointer(rebasing: raw[at..<(at + n)]))
                at += n
                turn += 1
            }
        }
        try stream.finish()
    }

    @Test(arguments: [UInt8(1), 2], [[1], [7, 1, 4096], [4096], [65536], [13, 999, 2, 31_000]])
    func packStreamsInAnyPieceSizes(version: UInt8, sizes: [Int]) async throws {
        let (pack, packID, entries, plains) = try await makePack(seed: 11, version: version)
        let locations = entries.map { BlobLocation(pack: packID, blob: $0) }
        // The whole pack, verified against its name.
        var got = [Data?](repeating: nil, count: entries.count)
        let whole = PackStream(pack: packID, blobs: locations.enumerated().map { ($1, [Restorer.Target(file: $0, offset: 0)]) },
                               start: 0, verifying: Int64(pack.count)) { sealed, location, targets in
            got[targets[0].file] = try PackFormat.openBlob(sealed, entry: location.blob, keys: keys, pack: packID)
        }
        try streamPieces(pack, sizes: sizes, stream: whole)
        #expect(got.map { $0 ?? Data() } == plains)
        // A span of some blobs (with a blob skipped in the middle), unverified as restore reads spans.
        let wanted = [3, 4, 6, 7]
        let start = Int(entries[3].offset)
        let end = Int(entries[7].offset + entries[7].length)
        var spanGot: [Int: Data] = [:]
        let span = PackStream(pack: packID, blobs: wanted.map { (locations[$0], [Restorer.Target(file: $0, offset: 0)]) },
                              start: Int64(start), verifying: nil) { sealed, location, targets in
            spanGot[targets[0].file] = try PackFormat.openBlob(sealed, entry: location.blob, keys: keys, pack: packID)
        }
        try streamPieces(pack.subdata(in: start..<end), sizes: sizes, stream: span)
        #expect(spanGot == Dictionary(uniqueKeysWithValues: wanted.map { ($0, plains[$0]) }))
        // A stream that ends early is reported as truncated.
        let short = PackStream(pack: packID, blobs: wanted.map { (locations[$0], []) }, start: Int64(start), verifying: nil) { _, _, _ in }
        #expect(throws: RepositoryError.self) { try streamPieces(pack.subdata(in: start..<(end - 1)), sizes: sizes, stream: short) }
        // A flipped byte in the header, the trailer or the prefix fails the whole-pack check,
        // and so does (version 1) one in a blob nobody wants; in version 2 such a blob vouches for
        // itself by its tag when it is opened (`verifyWhole` compares every tag with the header).
        let headerStart = Int(entries.last!.offset + entries.last!.length)
        for at in [4, headerStart + 9, pack.count - 6, pack.count - 1] + (version == 1 ? [Int(entries[5].offset) + 3] : []) {
            var flipped = pack
            flipped[at] ^= 0x40
            let damaged = PackStream(pack: packID, blobs: [(locations[0], [])], start: 0, verifying: Int64(pack.count)) { _, _, _ in }
            #expect(throws: RepositoryError.self, "byte \(at) flipped") { try streamPieces(flipped, sizes: sizes, stream: damaged) }
        }
        // A pack cut short fails the whole-pack check, and so does a longer one.
        let cut = PackStream(pack: packID, blobs: [(locations[0], [])], start: 0, verifying: Int64(pack.count)) { _, _, _ in }
        #expect(throws: RepositoryError.self) { try streamPieces(pack.prefix(pack.count - 100), sizes: sizes, stream: cut) }
        let longer = PackStream(pack: packID, blobs: [(locations[0], [])], start: 0, verifying: Int64(pack.count)) { _, _, _ in }
        #expect(throws: RepositoryError.self) { try streamPieces(pack + Data(count: 7), sizes: sizes, stream: longer) }
    }

    /// With the pack's size known, the name check copies only the pack's last `keep` bytes and
    /// still tells a good pack from a damaged one; a header longer than those bytes is left to
    /// the blobs' tags (nil), as without the size.
    @Test(arguments: [[1], [13, 999, 2], [65536]])
    func theNameCheckKeepsOnlyThePacksEnd(sizes: [Int]) async throws {
        let (pack, packID, entries, _) = try await makePack(seed: 12, version: 2)
        let headerStart = Int(entries.last!.offset + entries.last!.length)
        let end = pack.count - headerStart  // header and trailer
        func check(_ bytes: Data, keep: Int) throws -> Bool? {
            let check = PackNameCheck(keep: keep, size: Int64(pack.count))
            var at = 0, turn = 0
            try bytes.withUnsafeBytes { raw in
                while at < raw.count {
                    let n = min(sizes[turn % sizes.count], raw.count - at)
                    try check.update(UnsafeRawBufferPointer(rebasing: raw[at..<(at + n)]), pack: packID)
                    at += n
                    turn += 1
                }
            }
            return check.matches(packID)
        }
        #expect(try check(pack, keep: end + 5) == true)
        #expect(try check(pack, keep: end) == true)
        var flipped = pack
        flipped[headerStart + 3] ^= 1
        #expect(try check(flipped, keep: end + 5) == false)
        flipped = pack
        flipped[pack.count - 2] ^= 1
        #expect(try check(flipped, keep: end + 5) == false)
        #expect(try check(pack, keep: end - 1) == nil, "a header longer than the bytes kept")
        #expect(try check(pack.prefix(pack.count - 1), keep: end + 5) == false)
    }

    /// A whole version 2 pack is checked against its name and its header's tags: damage in any
    /// blob's tag, in the header or the trailer is found without opening a blob; damage inside a
    /// ciphertext is found when that blob is opened (as check --read-data opens every one).
    @Test func aWholeVersion2PackIsCheckedAgainstItsHeader() async throws {
        let (pack, packID, entries, _) = try await makePack(seed: 13)
        #expect(try PackFormat.verifyWhole(pack, pack: packID, key: keys.encryption) == entries)
        let e = entries[4]
        let tagByte = Int(e.offset + e.length) - 3
        let headerStart = Int(entries.last!.offset + entries.last!.length)
        for at in [tagByte, headerStart + 20, pack.count - 2, 0] {
            var flipped = pack
            flipped[at] ^= 0x01
            #expect(throws: RepositoryError.self, "byte \(at) flipped") { try PackFormat.verifyWhole(flipped, pack: packID, key: keys.encryption) }
        }
        var inCiphertext = pack
        inCiphertext[Int(e.offset) + 20] ^= 0x01
        #expect(try PackFormat.verifyWhole(inCiphertext, pack: packID, key: keys.encryption) == entries)
        #expect(throws: RepositoryError.self) {
            try inCiphertext.withUnsafeBytes {
                try PackFormat.openBlob(UnsafeRawBufferPointer(rebasing: $0[Int(e.offset)..<Int(e.offset + e.length)]), entry: e, keys: keys, pack: packID)
            }
        }
        // A version 1 pack's bytes presented under a name made the version 2 way are refused.
        let (old, oldID, _, _) = try await makePack(seed: 13, version: 1)
        #expect(try PackFormat.verifyWhole(old, pack: oldID, key: keys.encryption).count == entries.count)
        let headerLength = Int(old.suffix(8).prefix(4).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) })
        let wrongName = ObjectID(hashing: old.prefix(5) + old.suffix(headerLength + 8))
        #expect(throws: RepositoryError.self) { try PackFormat.verifyWhole(old, pack: wrongName, key: keys.encryption) }
        // Version 1 bytes relabelled as version 2 (and named the version 2 way) are refused: the
        // header is a version 1 header, which lists no tags.
        var relabelled = old
        relabelled[4] = 2
        let relabelledName = ObjectID(hashing: relabelled.prefix(5) + relabelled.suffix(headerLength + 8))
        let relabelError = #expect(throws: RepositoryError.self) { try PackFormat.verifyWhole(relabelled, pack: relabelledName, key: keys.encryption) }
        #expect(relabelError?.message.contains("not one of a version 2 pack") == true, "\(relabelError?.message ?? "")")
        // An unknown pack version is unsupported, not guessed.
        var future = pack
        future[4] = 3
        let error = #expect(throws: RepositoryError.self) { try PackFormat.verifyWhole(future, pack: packID, key: keys.encryption) }
        #expect(error?.code == .unsupported)
    }

    /// Trees have no size bound (a directory of some hundred thousand entries): blobs larger than
    /// the pooled sealing buffers are stored and read back, raw and compressed.
    @Test func blobsLargerThanTheScratchBuffersRoundTrip() async throws {
        let repo = try await makeRepository()
        var gen = SeededBytes(seed: 12)
        let big = PackFormat.scratch.capacity + (1 << 20) + 5
        let random = gen.data(big)
        let compressible = Data(repeating: 0x7B, count: big) + gen.data(4096)
        let writer = BlobWriter(repository: repo, connections: 2)
        var ids: [BlobID] = []
        for plain in [random, compressible] {
            let id = repo.blobID(plain)
            #expect(try await writer.save(plain, id: id, type: .tree))
            ids.append(id)
        }
        try await writer.flush()
        #expect(try await repo.loadBlob(ids[0]) == random)
        #expect(try await repo.loadBlob(ids[1]) == compressible)
        // And through the streaming path restore uses.
        let location = try #require(repo.index.lookup(ids[0]))
        var streamed: Data?
        let stream = PackStream(pack: location.pack, blobs: [(location, [])], start: Int64(location.blob.offset), verifying: nil) { sealed, location, _ in
            streamed = try PackFormat.openBlob(sealed, entry: location.blob, keys: repo.keys, pack: location.pack)
        }
        let start = Int64(location.blob.offset)
        let sealed = try await repo.loadPackRange(location.pack, start..<(start + Int64(location.blob.length)))
        try streamPieces(sealed, sizes: [1 << 20], stream: stream)
        #expect(streamed == random)

        // In one stream: a small blob gathered in a pooled buffer, then the large one (the
        // gathering buffer is replaced by a larger one), then a small one again.
        var builder = try PackBuilder(file: StagedFile.temporary(), version: repo.packVersion)
        var plains: [Data] = []
        for plain in [gen.data(5000), random, gen.text(7000)] {
            let id = repo.blobID(plain)
            try builder.add(sealed: PackFormat.sealBlob(plain, id: id, type: .data, key: repo.keys.encryption), id: id, type: .data,
                            rawLength: plain.count)
            plains.append(plain)
        }
        let (file, packID) = try await builder.finish(key: repo.keys.encryption)
        let pack = try file.readAll()
        let entries = try PackFormat.decodeHeader(tail: pack, packSize: Int64(pack.count), key: repo.keys.encryption, pack: packID)
        var got = [Data?](repeating: nil, count: entries.count)
        let mixed = PackStream(pack: packID, blobs: entries.enumerated().map { (BlobLocation(pack: packID, blob: $1), [Restorer.Target(file: $0, offset: 0)]) },
                               start: 0, verifying: Int64(pack.count)) { sealed, location, targets in
            got[targets[0].file] = try PackFormat.openBlob(sealed, entry: location.blob, keys: repo.keys, pack: packID)
        }
        try streamPieces(pack, sizes: [3000, 1 << 20], stream: mixed)
        #expect(got.map { $0 ?? Data() } == plains)
    }
}
