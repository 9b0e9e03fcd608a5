import Foundation
import Logging
import Storage

public struct RepositoryConfig: Codable, Sendable {
    public var version = formatVersion
    public var id: String
    public var chunker: ChunkerParameters
    public var packSize: Int
    public var created: Date
}

public struct RepositoryOptions: Sendable {
    public var chunker = ChunkerParameters.default
    public var packSize = 16 << 20
    public var kdf = KDFParameters.default
    /// The format version to create (docs/format.md): 2, or 1 for a repository that releases
    /// before version 2 packs must still read.
    public var version = formatVersion
    public init() {}
}

/// An open repository: its backend, its unlocked keys, its config and its in-memory index.
public final class Repository: Sendable {
    public let storage: any Storage
    public let config: RepositoryConfig
    public let chunker: Chunker
    public let index = MasterIndex()
    let treeCache = TreeCache()
    public let logger: Logger
    let keys: MasterKeys
    /// Index and snapshot files that could not be read (damaged) and were skipped, with why:
    /// `repo repair index` / `repo repair snapshots` deal with them; `check` reports them.
    public let damaged = Locked<[String: String]>([:])
    /// Index files already in `index` (read, or written by this process): a reload reads only
    /// the others, so committing a snapshot or checking does not read the whole index again.
    let loadedIndexFiles = Locked<Set<ObjectID>>([])
    /// The key file the password opened (nil for a repository just initialised in this process
    /// until it is set).
    public let openedKey = Locked<ObjectID?>(nil)

    init(storage: any Storage, keys: MasterKeys, config: RepositoryConfig, logger: Logger) {
        self.storage = storage
        self.keys = keys
        self.config = config
        self.logger = logger
        chunker = Chunker(parameters: config.chunker, key: keys.chunkID)
    }

    /// Creates a new repository: fresh master keys, one key file for `password`, the config.
    public static func initialize(storage: any Storage, password: String, options: RepositoryOptions = .init(),
                                  logger: Logger) async throws -> Repository {
        guard !password.isEmpty else { throw RepositoryError(.invalidArgument, "empty repository password") }
        try options.chunker.validate()
        guard (1...formatVersion).contains(options.version) else {
            throw RepositoryError(.invalidArgument, "repository format version \(options.version) cannot be created (1 to \(formatVersion))")
        }
        guard options.packSize >= 1 << 16, options.packSize <= 1 << 30 else {
            throw RepositoryError(.invalidArgument, "pack size \(options.packSize) out of range (64 KiB – 1 GiB)")
        }
        if try await storage.exists(.config) {
            throw RepositoryError(.alreadyInitialized, "\(storage.location) is already a repository")
        }
        let existingKeys: [FileInfo]
        do {
            existingKeys = try await storage.list(.keys)
        } catch let error as StorageError where error.code == .notFound {
            existingKeys = []  // the location does not exist yet (REST servers answer 404)
        }
        // Another init may be between its key file and its config: look for the config again.
        if !existingKeys.isEmpty, try await configAppears(in: storage) {
            throw RepositoryError(.alreadyInitialized, "\(storage.location) is already a repository (another init created it at the same time)")
        }
        if !existingKeys.isEmpty {
            throw RepositoryError(.alreadyInitialized,
                                  "\(storage.location) holds key files but no config (an interrupted init?): remove it or choose another location")
        }
        try await storage.create()
        let keys = MasterKeys.generate()
        let config = RepositoryConfig(version: options.version, id: Crypto.random(32).map { String(format: "%02x", $0) }.joined(),
                                      chunker: options.chunker, packSize: options.packSize, created: Date())
        let repo = Repository(storage: storage, keys: keys, config: config, logger: logger)
        let key = try await repo.addKey(password: password, kdf: options.kdf)
        repo.openedKey.withLock { $0 = key }
        // The config goes last: a repository whose init was interrupted has no config and is not
        // one. It is created only if absent: of two inits at once, one wins, and the other's key
        // (which wraps master keys that open nothing) is removed again.
        do {
            try await storage.saveNew(.config, data: Envelope.seal(JSON.encode(config), kind: .config, key: keys.encryption))
        } catch let error as StorageError where error.code == .alreadyExists {
            do { try await storage.remove(Handle(.keys, key.hex)) } catch {
                logger.warning("cannot remove the key file \(key) of the init that lost: \(error); it opens nothing and is skipped")
            }
            throw RepositoryError(.alreadyInitialized, "\(storage.location) is already a repository (another init created it at the same time)")
        }
        return repo
    }

    /// Whether `config` exists within a moment (an init that has written its key file writes its
    /// config right after).
    private static func configAppears(in storage: any Storage) async throws -> Bool {
        for _ in 0..<5 {
            if try await storage.exists(.config) { return true }
            try await Task.sleep(for: .milliseconds(200))
        }
        return try await storage.exists(.config)
    }

    /// Opens an existing repository with `password` and loads its index.
    public static func open(storage: any Storage, password: String, logger: Logger) async throws -> Repository {
        let sealedConfig: Data
        do {
            sealedConfig = try await storage.load(.config)
        } catch let error as StorageError where error.code == .notFound {
            throw RepositoryError(.notARepository, "there is no repository at \(storage.location) (no config file)")
        }
        let keyFiles = try await storage.list(.keys)
        guard !keyFiles.isEmpty else {
            throw RepositoryError(.corrupted, "the repository at \(storage.location) has no key files")
        }
        // Try every key file: a damaged or newer-format key file is skipped, and a key that opens
        // but does not decrypt the config (a stale key) does not stop the search.
        var opened: (MasterKeys, RepositoryConfig)?
        var openedName: ObjectID?
        var problems: [String] = []
        for info in keyFiles {
            guard let name = ObjectID(hex: info.name) else { continue }
            do {
                let data = try await storage.load(Handle(.keys, info.name))
                guard ObjectID(hashing: data) == name else {
                    throw RepositoryError(.corrupted, "key file \(name) is corrupted: its content does not match its name")
                }
                let file = try JSON.decode(KeyFile.self, data, what: "key file \(name)")
                guard let keys = try await file.unlock(password: password, what: "key file \(name)") else { continue }
                let plain = try Envelope.open(sealedConfig, kind: .config, key: keys.encryption, what: "repository config")
                opened = (keys, try JSON.decode(RepositoryConfig.self, plain, what: "repository config"))
                openedName = name
                break
            } catch let error as RepositoryError {
                logger.warning("\(error.message); trying the other keys")
                problems.append(error.message)
            }
        }
        guard let (keys, config) = opened else {
            if let problem = problems.first, problems.count == keyFiles.count {
                throw RepositoryError(.corrupted, problem)
            }
            throw RepositoryError(.wrongPassword, "wrong password: no key of the repository at \(storage.location) opens with it")
        }
        guard (1...formatVersion).contains(config.version) else {
            throw RepositoryError(.unsupported, "repository format version \(config.version) is not supported (this program reads 1 to \(formatVersion))")
        }
        try config.chunker.validate()
        let repo = Repository(storage: storage, keys: keys, config: config, logger: logger)
        repo.openedKey.withLock { $0 = openedName }
        try await repo.loadIndex()
        return repo
    }

    /// Adds a key file so that `password` also opens this repository.
    @discardableResult
    public func addKey(password: String, kdf: KDFParameters = .default) async throws -> ObjectID {
        let file = try await KeyFile.make(password: password, keys: keys, parameters: kdf)
        return try await saveObject(.keys, JSON.encode(file))
    }

    // MARK: objects named by their hash

    /// Stores `data` as `type/<sha256(data)>`.
    @discardableResult
    func saveObject(_ type: FileType, _ data: Data) async throws -> ObjectID {
        let id = ObjectID(hashing: data)
        try await storage.save(Handle(type, id.hex), data: data)
        return id
    }

    /// Stores a finished staged file under its name (a pack's, `PackBuilder.finish`); returns its size.
    func saveStagedObject(_ type: FileType, _ file: StagedFile, as id: ObjectID) async throws -> Int64 {
        let size = try file.finish()
        try await storage.save(Handle(type, id.hex), staged: file)
        return size
    }

    /// The version of the packs this repository is written with (format §8).
    var packVersion: UInt8 { config.version >= 2 ? 2 : 1 }

    /// Loads `type/<id>` as stored, unchecked.
    func loadStoredObject(_ type: FileType, _ id: ObjectID) async throws -> Data {
        do {
            return try await storage.load(Handle(type, id.hex))
        } catch let error as StorageError where error.code == .notFound {
            throw RepositoryError(.missing, "\(type.rawValue) file \(id) is missing from the repository")
        }
    }

    /// Loads `type/<id>` and checks that its bytes hash to its name (not for packs: a version 2
    /// pack is named from its header, `PackFormat.verifyWhole`).
    func loadObject(_ type: FileType, _ id: ObjectID) async throws -> Data {
        let data = try await loadStoredObject(type, id)
        guard ObjectID(hashing: data) == id else {
            throw RepositoryError(.corrupted, "\(type.rawValue) file \(id) is corrupted: its content does not match its name")
        }
        return data
    }

    func saveEncrypted<T: Encodable>(_ type: FileType, kind: Envelope.Kind, _ value: T) async throws -> ObjectID {
        try await saveObject(type, Envelope.seal(JSON.encode(value), kind: kind, key: keys.encryption))
    }

    func loadEncrypted<T: Decodable>(_ type: FileType, kind: Envelope.Kind, _ id: ObjectID, as: T.Type) async throws -> T {
        let what = "\(type.rawValue) file \(id)"
        let plain = try Envelope.open(try await loadObject(type, id), kind: kind, key: keys.encryption, what: what)
        return try JSON.decode(T.self, plain, what: what)
    }

    // MARK: index

    /// Loads every index file. A damaged one (it does not match its name, does not decrypt or
    /// decode) is skipped with a warning and remembered in `damaged`: the blobs it alone lists
    /// are then unknown (a backup stores them again; a restore that needs them says which blob is
    /// missing), everything else works. `repo repair index` rebuilds the index from the packs.
    /// Other failures (the storage is unreachable) still fail. Index files loaded before are
    /// not read again.
    func loadIndex() async throws {
        let known = loadedIndexFiles.value
        let files = try await storage.list(.index).compactMap { ObjectID(hex: $0.name) }.filter { !known.contains($0) }
        try await withThrowingTaskGroup(of: (ObjectID, IndexFile?).self) { group in
            var next = files.makeIterator()
            func addNext() {
                guard let id = next.next() else { return }
                group.addTask {
                    do {
                        return (id, try await self.loadEncrypted(.index, kind: .index, id, as: IndexFile.self))
                    } catch let error as RepositoryError where error.code == .corrupted {
                        self.noteDamaged("index/\(id.hex)", error.message)
                        return (id, nil)
                    }
                }
            }
            for _ in 0..<8 { addNext() }
            var read: [(ObjectID, IndexFile)] = []
            while let (id, file) = try await group.next() {
                if let file { read.append((id, file)) }
                addNext()
            }
            // An index file named in another's `supersedes` (a prune stopped before deleting
            // it) is ignored; if one loaded before is superseded now, everything is read again.
            let superseded = Set(read.flatMap { $0.1.supersedes })
            if !superseded.isDisjoint(with: loadedIndexFiles.value) {
                index.resetIndexed()
                loadedIndexFiles.withLock { $0.removeAll() }
                try await loadIndex()
                return
            }
            for (id, file) in read {
                if !superseded.contains(id) { index.addIndexed(file) }
                loadedIndexFiles.withLock { _ = $0.insert(id) }  // read (and used, or ignored)
            }
        }
    }

    /// After a lock is taken: when an index file loaded before is gone (a prune replaced it),
    /// the index is read again from scratch, so nothing deleted is taken for stored; else only
    /// new index files are read.
    func reloadIndexIfChanged() async throws {
        let present = Set(try await storage.list(.index).compactMap { ObjectID(hex: $0.name) })
        if !loadedIndexFiles.value.isSubset(of: present) {
            logger.info("index files were removed since the index was read (a prune): reading it again")
            index.resetIndexed()
            loadedIndexFiles.withLock { $0.removeAll() }
        }
        try await loadIndex()
    }

    func noteDamaged(_ name: String, _ why: String) {
        let first = damaged.withLock { d -> Bool in
            defer { d[name] = why }
            return d[name] == nil
        }
        if first { logger.warning("\(why): skipped (see `chebackup repo check`, `repo repair`)") }
    }

    /// Writes the packs stored since the last call into new index files.
    func flushIndex() async throws {
        try await writeIndexFiles(index.takeUnsaved())
    }

    /// Writes an index file as soon as stored packs fill one, so a long backup neither keeps its
    /// whole index unsaved until the end nor encodes it all at once there; packs stored before a
    /// crash are then mostly indexed already.
    func flushFullIndexFiles() async throws {
        while true {
            let packs = index.takeUnsaved(fullFileOf: Self.blobsPerIndexFile)
            if packs.isEmpty { return }
            try await writeIndexFiles(packs)
        }
    }

    private func writeIndexFiles(_ unsaved: [IndexFile.Pack]) async throws {
        var packs = unsaved
        // Several smaller index files rather than one large one: encoding holds a file's whole
        // JSON in memory several times over, so its size would grow with the backup.
        while !packs.isEmpty {
            let count = IndexFile.fileLength(of: packs, limit: Self.blobsPerIndexFile).packs
            do {
                let id = try await saveEncrypted(.index, kind: .index, IndexFile(packs: Array(packs.prefix(count))))
                loadedIndexFiles.withLock { _ = $0.insert(id) }
            } catch {
                index.returnUnsaved(packs)
                throw error
            }
            packs.removeFirst(count)
        }
    }

    /// At most this many blobs per index file (about 450 KiB of JSON), unless one pack has more.
    static let blobsPerIndexFile = 4096

    // MARK: blobs

    public func blobID(_ bytes: UnsafeRawBufferPointer) -> BlobID { BlobID(Crypto.hmac(keys.chunkID, bytes)) }
    public func blobID(_ data: Data) -> BlobID { data.withUnsafeBytes { blobID($0) } }

    /// Loads, verifies and decodes one blob with a range request.
    public func loadBlob(_ id: BlobID) async throws -> Data {
        guard let location = index.lookup(id) else {
            throw RepositoryError(.missing, "blob \(id) is not in the index: the repository is damaged")
        }
        let start = Int64(location.blob.offset)
        let sealed = try await loadPackRange(location.pack, start..<(start + Int64(location.blob.length)))
        return try sealed.withUnsafeBytes { try PackFormat.openBlob($0, entry: location.blob, keys: keys, pack: location.pack) }
    }

    func loadPackRange(_ pack: PackID, _ range: Range<Int64>) async throws -> Data {
        do {
            return try await storage.load(Handle(.data, pack.hex), range: range)
        } catch let error as StorageError where error.code == .notFound {
            throw RepositoryError(.missing, "pack \(pack) is missing from the repository")
        } catch let error as StorageError where error.code == .invalidRange {
            throw RepositoryError(.corrupted, "pack \(pack) is truncated: \(error.message)")
        }
    }

    /// Streams `range` of a pack to `consume` (see `Storage.stream`), with `loadPackRange`'s errors.
    func streamPackRange(_ pack: PackID, _ range: Range<Int64>, to consume: @escaping ByteConsumer) async throws {
        do {
            try await storage.stream(Handle(.data, pack.hex), range: range, to: consume)
        } catch let error as StorageError where error.code == .notFound {
            throw RepositoryError(.missing, "pack \(pack) is missing from the repository")
        } catch let error as StorageError where error.code == .invalidRange {
            throw RepositoryError(.corrupted, "pack \(pack) is truncated: \(error.message)")
        }
    }

    func openBlob(_ sealed: UnsafeRawBufferPointer, _ location: BlobLocation, checkID: Bool = true) throws -> Data {
        try PackFormat.openBlob(sealed, entry: location.blob, keys: keys, pack: location.pack, checkID: checkID)
    }

    public func loadTree(_ id: BlobID) async throws -> Tree {
        let data: Data
        if let cached = try cachedTree(id, take: false) { data = cached } else { data = try await loadBlob(id) }
        return try TreeCodec.decode(data, what: "tree \(id)")
    }

    /// `loadTree`, taking the tree's bytes out of the cache (a walk that decodes each tree once).
    func takeTree(_ id: BlobID) async throws -> Tree {
        let data: Data
        if let cached = try cachedTree(id, take: true) { data = cached } else { data = try await loadBlob(id) }
        return try TreeCodec.decode(data, what: "tree \(id)")
    }

    /// Reads a pack's header from its tail (to rebuild the index from packs alone).
    func readPackHeader(_ pack: PackID, size: Int64) async throws -> [PackedBlob] {
        var tailLength = PackFormat.tailGuess(packSize: size)
        var tail = try await loadPackRange(pack, (size - tailLength)..<size)
        let t = [UInt8](tail.suffix(PackFormat.trailerSize))
        if t.count == 8 {
            let headerLength = Int64(UInt32(t[0]) | UInt32(t[1]) << 8 | UInt32(t[2]) << 16 | UInt32(t[3]) << 24)
            if headerLength + 8 > tailLength && headerLength + 8 <= size {
                tailLength = headerLength + 8
                tail = try await loadPackRange(pack, (size - tailLength)..<size)
            }
        }
        return try PackFormat.decodeHeader(tail: tail, packSize: size, key: keys.encryption, pack: pack)
    }
}
