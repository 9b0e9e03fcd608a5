import Foundation
import Storage
import Synchronization

/// Wraps a backend and fails chosen operations, to test what callers do when storage breaks.
public final class FaultyStorage: Storage {
    public let base: any Storage
    /// Decides, per save, whether it fails: gets the handle and how many saves of that type came before.
    private let failSave: @Sendable (Handle, Int) -> StorageError?
    private let counts = Mutex<[FileType: Int]>([:])

    public init(_ base: any Storage, failSave: @escaping @Sendable (Handle, Int) -> StorageError?) {
        self.base = base
        self.failSave = failSave
    }

    public var location: String { base.location }
    public var defaultConnections: Int { base.defaultConnections }
    public func create() async throws { try await base.create() }

    public func save(_ handle: Handle, data: Data) async throws {
        try decide(handle)
        try await base.save(handle, data: data)
    }

    public func saveNew(_ handle: Handle, data: Data) async throws {
        try decide(handle)
        try await base.saveNew(handle, data: data)
    }

    /// Staging goes to the base backend (a local repository stages in its own `tmp/`).
    public func makeStagingFile(for type: FileType) throws -> StagedFile { try base.makeStagingFile(for: type) }

    public func save(_ handle: Handle, staged: StagedFile) async throws {
        try decide(handle)
        try await base.save(handle, staged: staged)
    }

    private func decide(_ handle: Handle) throws {
        let n = counts.withLock { c -> Int in
            defer { c[handle.type, default: 0] += 1 }
            return c[handle.type, default: 0]
        }
        if let error = failSave(handle, n) { throw error }
    }

    public func load(_ handle: Handle, range: Range<Int64>?) async throws -> Data { try await base.load(handle, range: range) }
    public func stat(_ handle: Handle) async throws -> FileInfo { try await base.stat(handle) }
    public func list(_ type: FileType) async throws -> [FileInfo] { try await base.list(type) }
    public func remove(_ handle: Handle) async throws { try await base.remove(handle) }
}
