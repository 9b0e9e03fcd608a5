import Foundation
import Synchronization

/// A backend in memory, for unit tests of the layers above storage. It obeys the same contract.
public final class MemoryStorage: Storage {
    private let files = Mutex<[Handle: Data]>([:])

    public init() {}

    public var location: String { "memory:" }
    public var defaultConnections: Int { 4 }

    public func create() async throws {}

    public func save(_ handle: Handle, data: Data) async throws {
        try validate(handle)
        files.withLock { $0[handle] = data }
    }

    public func saveNew(_ handle: Handle, data: Data) async throws {
        try validate(handle)
        try files.withLock { files in
            if let existing = files[handle] {
                guard existing == data else { throw StorageError(.alreadyExists, "\(handle) already exists") }
                return
            }
            files[handle] = data
        }
    }

    public func load(_ handle: Handle, range: Range<Int64>?) async throws -> Data {
        guard let data = files.withLock({ $0[handle] }) else {
            throw StorageError(.notFound, "\(handle) not found")
        }
        guard let range else { return data }
        guard range.lowerBound >= 0, range.upperBound <= Int64(data.count) else {
            throw StorageError(.invalidRange, "range \(range) outside \(handle) (\(data.count) bytes)")
        }
        return data.subdata(in: Int(range.lowerBound)..<Int(range.upperBound))
    }

    public func stat(_ handle: Handle) async throws -> FileInfo {
        guard let data = files.withLock({ $0[handle] }) else {
            throw StorageError(.notFound, "\(handle) not found")
        }
        return FileInfo(name: handle.name, size: Int64(data.count))
    }

    public func list(_ type: FileType) async throws -> [FileInfo] {
        files.withLock { files in
            files.filter { $0.key.type == type }.map { FileInfo(name: $0.key.name, size: Int64($0.value.count)) }
        }
    }

    public func remove(_ handle: Handle) async throws {
        let removed = files.withLock { $0.removeValue(forKey: handle) }
        if removed == nil { throw StorageError(.notFound, "\(handle) not found") }
    }

    /// Test hook: replaces a stored file's bytes (to simulate corruption).
    public func tamper(_ handle: Handle, _ change: (inout Data) -> Void) {
        files.withLock { files in
            if var data = files[handle] {
                change(&data)
                files[handle] = data
            }
        }
    }

    private func validate(_ handle: Handle) throws {
        if handle.type != .config && (handle.name.isEmpty || handle.name.contains("/")) {
            throw StorageError(.permanent, "invalid file name \"\(handle.name)\"")
        }
    }
}
