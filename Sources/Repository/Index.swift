import Foundation
import Synchronization

/// Where a blob is stored.
public struct BlobLocation: Hashable, Sendable {
    public let pack: PackID
    public let blob: PackedBlob
}

/// An index file (`index/<sha256>`), an encrypted JSON envelope listing packs and their blobs.
/// `supersedes` names index files this one replaces (written by a future `prune`/rebuild).
struct IndexFile: Codable {
    struct Pack: Codable {
        let id: PackID
        let size: Int64
        let blobs: [Blob]
    }

    struct Blob: Codable {
        let id: BlobID
        let type: BlobType
        let offset: UInt32
        let length: UInt32
        let rawLength: UInt32
    }

    var version = 1
    var supersedes: [ObjectID] = []
    var packs: [Pack]

    /// How many packs from the front of `packs` make one index file: as many whole packs as fit
    /// in `limit` blobs, at least one; and how many blobs they hold.
    static func fileLength(of packs: [Pack], limit: Int) -> (packs: Int, blobs: Int) {
        var count = 0
        var blobs = 0
        while count < packs.count && (count == 0 || blobs + packs[count].blobs.count <= limit) {
            blobs += packs[count].blobs.count
            count += 1
        }
        return (count, blobs)
    }
}

/// The in-memory index of every blob in the repository, shared by all tasks of one process.
/// `claim` is how deduplication works across concurrent tasks: the first to claim a new id
/// stores it; everyone else skips it.
public final class MasterIndex: Sendable {
    /// A blob's location without its id (the key) and with its pack as a number: 20 bytes
    /// instead of 80, which is most of the index's memory (one entry per blob in the repository).
    private struct Entry {
        let pack: UInt32
        let type: BlobType
        let offset: UInt32
        let length: UInt32
        let rawLength: UInt32
    }

    private struct State {
        var blobs: [BlobID: Entry] = [:]
        var packIDs: [PackID] = []
        var packNumbers: [PackID: UInt32] = [:]
        var packSizes: [PackID: Int64] = [:]
        var pending: Set<BlobID> = []
        var unsaved: [IndexFile.Pack] = []

        func location(_ id: BlobID, _ e: Entry) -> BlobLocation {
            BlobLocation(pack: packIDs[Int(e.pack)], blob: PackedBlob(id: id, type: e.type, offset: e.offset, length: e.length,
                                                                      rawLength: e.rawLength))
        }
    }

    private let state = Mutex(State())

    public init() {}

    public var blobCount: Int { state.withLock { $0.blobs.count } }

    public func lookup(_ id: BlobID) -> BlobLocation? {
        state.withLock { s in s.blobs[id].map { s.location(id, $0) } }
    }
    public func has(_ id: BlobID) -> Bool { state.withLock { $0.blobs[id] != nil } }
    public func packSize(_ pack: PackID) -> Int64? { state.withLock { $0.packSizes[pack] } }
    public var packs: [PackID: Int64] { state.withLock { $0.packSizes } }
    public func allLocations() -> [BlobLocation] { state.withLock { s in s.blobs.map { s.location($0.key, $0.value) } } }

    /// The blobs not in `referenced`: how many, their stored bytes, the packs holding them.
    public func unreferenced(by referenced: Set<BlobID>) -> (blobs: Int, bytes: Int64, packs: Set<PackID>) {
        state.withLock { s in
            var count = 0
            var bytes: Int64 = 0
            var packs = Set<PackID>()
            for (id, e) in s.blobs where !referenced.contains(id) {
                count += 1
                bytes += Int64(e.length)
                packs.insert(s.packIDs[Int(e.pack)])
            }
            return (count, bytes, packs)
        }
    }

    /// True when the caller must store `id`: it is neither stored nor being stored.
    func claim(_ id: BlobID) -> Bool {
        state.withLock { s in
            if s.blobs[id] != nil || s.pending.contains(id) { return false }
            s.pending.insert(id)
            return true
        }
    }

    /// Records packs read from an index file (already stored, already indexed).
    func addIndexed(_ file: IndexFile) {
        state.withLock { s in
            for pack in file.packs { Self.insert(pack, into: &s) }
        }
    }

    /// Records a pack this process just stored; it goes into the next index file written.
    func addStored(_ pack: IndexFile.Pack) {
        state.withLock { s in
            Self.insert(pack, into: &s)
            for blob in pack.blobs { s.pending.remove(blob.id) }
            s.unsaved.append(pack)
        }
    }

    /// Forgets claims that were never stored (after a failed backup), so a later backup in the
    /// same process stores those blobs instead of assuming someone else did.
    func abandonPending() {
        state.withLock { $0.pending.removeAll() }
    }

    func takeUnsaved() -> [IndexFile.Pack] {
        state.withLock { s in
            defer { s.unsaved = [] }
            return s.unsaved
        }
    }

    /// The oldest unsaved packs that make one full index file: as many as fit in `limit` blobs,
    /// once the next pack would not fit (or one pack alone reaches the limit); else nothing.
    func takeUnsaved(fullFileOf limit: Int) -> [IndexFile.Pack] {
        state.withLock { s in
            let (count, total) = IndexFile.fileLength(of: s.unsaved, limit: limit)
            guard count > 0, total >= limit || count < s.unsaved.count else { return [] }
            defer { s.unsaved.removeFirst(count) }
            return Array(s.unsaved.prefix(count))
        }
    }

    /// Forgets every indexed pack and blob (the index is about to be read again); what this
    /// process stored but has not indexed yet is kept.
    func resetIndexed() {
        state.withLock { s in
            let unsaved = s.unsaved
            let pending = s.pending
            s = State()
            s.pending = pending
            for pack in unsaved { Self.insert(pack, into: &s) }
            s.unsaved = unsaved
        }
    }

    /// Puts packs back after a failed index write, so a retry includes them.
    func returnUnsaved(_ packs: [IndexFile.Pack]) {
        state.withLock { $0.unsaved.insert(contentsOf: packs, at: 0) }
    }


    private static func insert(_ pack: IndexFile.Pack, into s: inout State) {
        s.packSizes[pack.id] = pack.size
        let number: UInt32
        if let known = s.packNumbers[pack.id] {
            number = known
        } else {
            number = UInt32(s.packIDs.count)
            s.packIDs.append(pack.id)
            s.packNumbers[pack.id] = number
        }
        for b in pack.blobs {
            s.blobs[b.id] = Entry(pack: number, type: b.type, offset: b.offset, length: b.length, rawLength: b.rawLength)
        }
    }
}

extension IndexFile.Pack {
    init(id: PackID, size: Int64, entries: [PackedBlob]) {
        self.init(id: id, size: size, blobs: entries.map {
            IndexFile.Blob(id: $0.id, type: $0.type, offset: $0.offset, length: $0.length, rawLength: $0.rawLength)
        })
    }
}
