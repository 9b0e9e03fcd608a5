import Foundation
import Storage
import Synchronization

/// Wraps a backend and "kills" its user after `mutations` changes: that change and everything
/// after it (reads too) fail, as if the process had died there. Lock objects count as changes
/// like any other, so a crash can also fall between a lock and the work it guards. `count` says
/// how many changes an uninterrupted run makes (use a large limit to measure it).
public final class CrashingStorage: Storage {
    public let base: any Storage
    private let limit: Int
    private let done = Mutex((count: 0, dead: false))

    public init(_ base: any Storage, afterMutations limit: Int) {
        self.base = base
        self.limit = limit
    }

    /// Changes made before the crash (or so far).
    public var count: Int { done.withLock { $0.count } }
    /// A change was refused: from then on everything fails.
    public var crashed: Bool { done.withLock { $0.dead } }

    public var location: String { base.location }
    public var defaultConnections: Int { base.defaultConnections }

    private func alive() throws {
        if crashed { throw StorageError(.permanent, "killed (test)") }
    }

    private func mutate() throws {
        let allowed = done.withLock { state -> Bool in
            guard !state.dead, state.count < limit else {
                state.dead = true
                return false
            }
            state.count += 1
            return true
        }
        if !allowed { throw StorageError(.permanent, "killed (test)") }
    }

    public func create() async throws { try mutate(); try await base.create() }
    public func save(_ handle: Handle, data: Data) async throws { try mutate(); try await base.save(handle, data: data) }
    public func saveNew(_ handle: Handle, data: Data) async throws { try mutate(); try await base.saveNew(handle, data: data) }
    public func makeStagingFile(for type: FileType) throws -> StagedFile { try alive(); return try base.makeStagingFile(for: type) }
    public func save(_ handle: Handle, staged: StagedFile) async throws { try mutate(); try await base.save(handle, staged: staged) }
    public func remove(_ handle: Handle) async throws { try mutate(); try await base.remove(handle) }
    public func load(_ handle: Handle, range: Range<Int64>?) async throws -> Data { try alive(); return try await base.load(handle, range: range) }
    public func stat(_ handle: Handle) async throws -> FileInfo { try alive(); return try await base.stat(handle) }
    public func list(_ type: FileType) async throws -> [FileInfo] { try alive(); return try await base.list(type) }
}
