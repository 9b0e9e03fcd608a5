import Foundation
import Storage

/// Several passwords per repository: each key file wraps the same master keys under its own
/// password (docs/format.md §4). Removing a key file never touches data, but removing the last
/// one, or the one in use, is refused: with no key left nobody can read the backups.
extension Repository {
    public struct KeyInfo: Sendable, Equatable {
        public var id: ObjectID
        public var created: Date?
        public var hostname: String?
        public var username: String?
        /// The key this process opened the repository with.
        public var current: Bool
        /// Why it cannot be read, when it cannot.
        public var problem: String?
    }

    public func listKeys() async throws -> [KeyInfo] {
        let current = openedKey.value
        var result: [KeyInfo] = []
        for info in try await storage.list(.keys) {
            guard let id = ObjectID(hex: info.name) else { continue }
            do {
                let file = try JSON.decode(KeyFile.self, try await loadObject(.keys, id), what: "key file \(id)")
                result.append(KeyInfo(id: id, created: file.created, hostname: file.hostname, username: file.username, current: id == current))
            } catch let error as RepositoryError {
                result.append(KeyInfo(id: id, current: id == current, problem: error.message))
            }
        }
        return result.sorted { ($0.created ?? .distantPast, $0.id.hex) < ($1.created ?? .distantPast, $1.id.hex) }
    }

    /// The key file `reference` (a unique prefix of its id) names.
    public func resolveKey(_ reference: String) async throws -> ObjectID {
        try await resolveObject(.keys, reference, what: "key", hint: "use hex digits (repo key list)",
                                notFound: .invalidArgument, ambiguous: .invalidArgument)
    }

    /// Removes a key file. The caller holds an exclusive lock.
    public func removeKey(_ id: ObjectID) async throws {
        if id == openedKey.value {
            throw RepositoryError(.invalidArgument, "key \(id.short) is the one in use: open the repository with another password to remove it (or use repo key passwd)")
        }
        let others = try await storage.list(.keys).compactMap { ObjectID(hex: $0.name) }.filter { $0 != id }
        guard !others.isEmpty else {
            throw RepositoryError(.invalidArgument, "key \(id.short) is the last key: without it nobody could read the repository")
        }
        do { try await storage.remove(Handle(.keys, id.hex)) } catch let error as StorageError where error.code == .notFound {
            throw RepositoryError(.invalidArgument, "no key with id \(id.short) in \(storage.location)")
        }
    }

    /// Replaces the key in use with one for `newPassword`: the new key file is written first,
    /// then the old one removed. The caller holds an exclusive lock.
    public func changePassword(to newPassword: String, kdf: KDFParameters = .default) async throws -> ObjectID {
        guard let old = openedKey.value else {
            throw RepositoryError(.invalidArgument, "the key in use is not known")
        }
        let new = try await addKey(password: newPassword, kdf: kdf)
        openedKey.withLock { $0 = new }
        do { try await storage.remove(Handle(.keys, old.hex)) } catch let error as StorageError where error.code == .notFound {}
        return new
    }
}
