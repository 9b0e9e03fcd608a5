/// Storage: where a repository's files live.
///
/// Terms: a *backend* stores whole, immutable, typed files (`Handle` = type + name) and offers
/// save, load (optionally a byte range), stat, list and remove. The contract every backend obeys,
/// and that `TestSupport`'s conformance suite checks:
///
/// - `save` is atomic: a reader sees either no file or the whole file, never part of it, also when
///   the writer dies mid-way. Saving a name that exists replaces it with the same bytes (names are
///   content hashes) or fails with `.alreadyExists`; it never leaves a mix.
/// - `load` of a missing file fails with `.notFound`, and nothing else means "not found".
/// - `load` with a range returns exactly those bytes; a range past the end fails with `.invalidRange`.
/// - `list` never shows temporary or half-written files.
/// - `saveNew` creates a file only if its name is free: of several writers racing to create one
///   name, one succeeds and the others fail with `.alreadyExists`, the file holding the winner's
///   bytes. It is what makes creating a repository (its `config`) exclusive.
/// - Transient failures (`.transient`) may be retried; every other error is permanent.
///
/// Retry and concurrency limits are not the backends' business: `StorageStack.compose` wraps any
/// backend in them, once.
import Foundation

/// The kinds of file a repository holds, named as in restic's REST protocol.
public enum FileType: String, CaseIterable, Sendable, Codable {
    case config, keys, locks, snapshots, index, data
}

/// A file in a backend: its type and name. `config` has the empty name.
public struct Handle: Hashable, Sendable, CustomStringConvertible {
    public let type: FileType
    public let name: String

    public init(_ type: FileType, _ name: String = "") {
        self.type = type
        self.name = name
    }

    public static let config = Handle(.config)

    public var description: String { type == .config ? "config" : "\(type.rawValue)/\(name)" }
}

/// Receives a streamed file's bytes, piece by piece (see `Storage.stream`).
public typealias ByteConsumer = @Sendable (UnsafeRawBufferPointer) throws -> Void

public struct FileInfo: Hashable, Sendable {
    public let name: String
    public let size: Int64

    public init(name: String, size: Int64) {
        self.name = name
        self.size = size
    }
}

/// The backend contract (see the module comment).
public protocol Storage: Sendable {
    /// Where the data lives, safe to print: never contains a password.
    var location: String { get }
    /// How many transfers this backend should run at once by default.
    var defaultConnections: Int { get }

    /// Prepares an empty location (directories, bucket, remote repository).
    func create() async throws
    func save(_ handle: Handle, data: Data) async throws
    /// Stores `data` as `handle` only if no file of that name exists (create-only), atomically
    /// as `save`: a file that exists with other bytes is left alone and the call fails with
    /// `.alreadyExists`; one that holds exactly `data` counts as created (a retried create
    /// whose first attempt had succeeded). Where the server cannot refuse an existing name, the
    /// backend detects a lost race by reading the file back (`confirmCreated`).
    func saveNew(_ handle: Handle, data: Data) async throws
    /// A new, empty file to write an object into before `save(_:staged:)`. Default: an unlinked
    /// temporary file; a local repository makes it inside its own directory, to rename it.
    func makeStagingFile(for type: FileType) throws -> StagedFile
    /// Stores a staged file (written and `finish()`ed) as `handle`, with `save`'s guarantees.
    /// Default: reads it into memory and calls `save(_:data:)`.
    func save(_ handle: Handle, staged: StagedFile) async throws
    func load(_ handle: Handle, range: Range<Int64>?) async throws -> Data
    /// Hands the bytes of `handle` (or of `range`, which must lie inside it) to `consume` in
    /// order, piece by piece as they arrive, never holding the whole file. `consume` runs on a
    /// transfer thread, one call at a time; an error it throws ends the load with that error.
    /// Default: `load`, then one call.
    func stream(_ handle: Handle, range: Range<Int64>, to consume: @escaping ByteConsumer) async throws
    func stat(_ handle: Handle) async throws -> FileInfo
    func list(_ type: FileType) async throws -> [FileInfo]
    func remove(_ handle: Handle) async throws
}

extension Storage {
    public func makeStagingFile(for type: FileType) throws -> StagedFile { try StagedFile.temporary() }

    public func save(_ handle: Handle, staged: StagedFile) async throws {
        try await save(handle, data: staged.readAll())
    }

    public func stream(_ handle: Handle, range: Range<Int64>, to consume: @escaping ByteConsumer) async throws {
        let data = try await load(handle, range: range)
        try data.withUnsafeBytes { try consume($0) }
    }

    public func load(_ handle: Handle) async throws -> Data {
        try await load(handle, range: nil)
    }

    /// True when the file exists; other errors propagate.
    public func exists(_ handle: Handle) async throws -> Bool {
        do {
            _ = try await stat(handle)
            return true
        } catch let error as StorageError where error.code == .notFound {
            return false
        }
    }
}

extension Handle {
    /// Remote backends put names into URLs and paths: only letters, digits, "-" and "_".
    func validateForRemote() throws {
        if type == .config { return }
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
            throw StorageError(.permanent, "invalid file name \"\(name)\"")
        }
    }
}

extension Storage {
    /// For a create-only write that found the name taken: success when the file holds exactly
    /// `data`, else `.alreadyExists`.
    func existing(_ handle: Handle, matches data: Data) async throws {
        let stored: Data
        do {
            stored = try await load(handle)
        } catch let error as StorageError where error.code == .notFound {
            throw StorageError(.transient, "create \(handle): the name was taken, then the file was gone")
        }
        guard stored == data else { throw StorageError(.alreadyExists, "\(handle) already exists") }
    }

    /// After a create-only write that the server may not have enforced (rclone's REST server
    /// replaces files; S3-compatible servers may ignore `If-None-Match`; SFTP servers may rename
    /// over a file): waits `settle`, for a racing writer's upload to land, then reads the file
    /// back. Other bytes mean another writer's create won: `.alreadyExists`. On a server that
    /// enforces create-only this only confirms; on one that does not, a writer whose upload
    /// lands more than `settle` after ours can still replace it (nothing can prevent that there).
    func confirmCreated(_ handle: Handle, _ data: Data, settle: Duration = createSettle) async throws {
        try await Task.sleep(for: settle)
        try await existing(handle, matches: data)
    }

    /// How long `confirmCreated` waits before reading back.
    static var createSettle: Duration { .milliseconds(300) }

    /// `list(.config)` for backends without a directory of configs: the config, if it exists.
    func listConfigByStat() async throws -> [FileInfo] {
        do { return [try await stat(.config)] } catch let e as StorageError where e.code == .notFound { return [] }
    }

    /// The contract for an empty range: empty data when it lies inside the file (servers answer
    /// a zero-length Range request inconsistently, so it is never sent), invalidRange past it.
    func loadEmptyRange(_ handle: Handle, _ range: Range<Int64>) async throws -> Data {
        if range.lowerBound > (try await stat(handle)).size {
            throw StorageError(.invalidRange, "range \(range) outside \(handle)")
        }
        return Data()
    }

    /// `stream` of an empty range: nothing to hand over, but the same range check.
    func stream(emptyRange range: Range<Int64>, of handle: Handle) async throws {
        _ = try await loadEmptyRange(handle, range)
    }
}
