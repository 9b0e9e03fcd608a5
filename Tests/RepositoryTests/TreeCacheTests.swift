import Foundation
import Testing
@testable import Repository

/// The tree cache keeps a loaded tree pack's bytes once and marks the trees a walk takes.
struct TreeCacheTests {
    /// A pack of three tree blobs (and one data blob, which the cache never serves).
    private static func pack() -> (PackID, Data, [PackedBlob]) {
        let bytes = Data((0..<40).map { UInt8($0) })
        func id(_ n: UInt8) -> BlobID { BlobID(Crypto.sha256(Data([n]))) }
        let entries = [PackedBlob(id: id(1), type: .tree, offset: 0, length: 10, rawLength: 10),
                       PackedBlob(id: id(2), type: .data, offset: 10, length: 10, rawLength: 10),
                       PackedBlob(id: id(3), type: .tree, offset: 30, length: 10, rawLength: 10),
                       PackedBlob(id: id(4), type: .tree, offset: 20, length: 10, rawLength: 10)]
        return (PackID(Crypto.sha256(bytes)), bytes, entries)
    }

    @Test func aTreeIsServedFromItsPacksBytesUntilAWalkTakesIt() {
        let (pack, bytes, entries) = Self.pack()
        let cache = TreeCache()
        cache.put(pack, data: bytes, entries: entries)
        let second = BlobLocation(pack: pack, blob: entries[3])
        #expect(cache.sealed(at: second, take: false) == bytes[20..<30])
        #expect(cache.sealed(at: second, take: false) == bytes[20..<30])  // reading does not take it
        #expect(cache.contains(second))
        #expect(cache.sealed(at: second, take: true) == bytes[20..<30])
        #expect(!cache.contains(second))
        #expect(cache.sealed(at: second, take: true) == nil)  // taken once: the walk reads it from the pack
        #expect(cache.sealed(at: second, take: false) == nil)
        // The others are still there; a data blob or an offset the pack does not list is not served.
        #expect(cache.sealed(at: BlobLocation(pack: pack, blob: entries[0]), take: false) == bytes[0..<10])
        #expect(cache.sealed(at: BlobLocation(pack: pack, blob: entries[1]), take: false) == nil)
        let stray = PackedBlob(id: entries[0].id, type: .tree, offset: 5, length: 10, rawLength: 10)
        #expect(cache.sealed(at: BlobLocation(pack: pack, blob: stray), take: false) == nil)
    }

    @Test func aPackIsDroppedWhenItsLastTreeIsTaken() {
        let (pack, bytes, entries) = Self.pack()
        let cache = TreeCache()
        cache.put(pack, data: bytes, entries: entries)
        #expect(cache.packsHeld == 1)
        for entry in [entries[0], entries[2]] { #expect(cache.sealed(at: BlobLocation(pack: pack, blob: entry), take: true) != nil) }
        #expect(cache.packsHeld == 1)
        #expect(cache.sealed(at: BlobLocation(pack: pack, blob: entries[3]), take: true) == bytes[20..<30])
        #expect(cache.packsHeld == 0)
        // A pack without trees is not kept at all.
        cache.put(pack, data: bytes, entries: [entries[1]])
        #expect(cache.packsHeld == 0)
    }
}
