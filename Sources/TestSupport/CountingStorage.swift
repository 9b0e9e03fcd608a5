import Foundation
import Storage
import Synchronization

/// Wraps a backend and records every read (`load` and `stream`): which file, which range. Tests
/// use it to assert what an operation reads, e.g. that a restore reads only its snapshot's packs.
public final class CountingStorage: Storage {
    public struct Read: Hashable, Sendable {
        public let handle: Handle
        /// Nil: the whole file.
        public let range: Range<Int64>?
    }

    public let base: any Storage
    private let log = Mutex<[Read]>([])

    public init(_ base: any Storage) { self.base = base }

    /// Every read since the last `reset`, in the order they started.
    public var reads: [Read] { log.withLock { $0 } }
    public func reset() { log.withLock { $0.removeAll() } }

    private func record(_ handle: Handle, _ range: Range<Int64>?) { log.withLock { $0.append(Read(handle: handle, range: range)) } }

    public var location: String { base.location }
    public var defaultConnections: Int { base.defaultConnections }
    public func create() async throws { try await base.create() }
    public func save(_ handle: Handle, data: Data) async throws { try await base.save(handle, data: data) }
    public func saveNew(_ handle: Handle, data: Data) async throws { try await base.saveNew(handle, data: data) }
    public func makeStagingFile(for type: FileType) throws -> StagedFile { try base.makeStagingFile(for: type) }
    public func save(_ handle: Handle, staged: StagedFile) async throws { try await base.save(handle, staged: staged) }

    public func load(_ handle: Handle, range: Range<Int64>?) async throws -> Data {
        record(handle, range)
        return try await base.load(handle, range: range)
    }

    public func stream(_ handle: Handle, range: Range<Int64>, to consume: @escaping ByteConsumer) async throws {
        record(handle, range)
        try await base.stream(handle, range: range, to: consume)
    }

    public func stat(_ handle: Handle) async throws -> FileInfo { try await base.stat(handle) }
    public func list(_ type: FileType) async throws -> [FileInfo] { try await base.list(type) }
    public func remove(_ handle: Handle) async throws { try await base.remove(handle) }
}
