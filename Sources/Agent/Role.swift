import Foundation
import LineProtocol
import Repository
import Subprocess

/// pg_dump and friends produce the streams of the postgres parts.
extension Subprocess: StreamProducer {}

/// What an agent backs up and restores. Parts are named `<role>/<name>`.
protocol Role: Sendable {
    var name: String { get }
    /// What its parts' names start with (`<prefix>/<name>`): the role's name unless set.
    var partPrefix: String { get }
    /// Stores this role's parts (data and index, no snapshot) and returns them.
    func backup(_ repo: Repository, parts: [String]?, installation: String?, progress: ProgressCounters, stage: @escaping @Sendable (String) -> Void)
        async throws -> [Part]
    /// Restores this role's parts of `snapshot`; returns the names restored.
    func restore(_ repo: Repository, snapshot: Snapshot, parts: [String]?, keepExtraneous: Bool, rewrite: [Rewrite],
                 progress: ProgressCounters, stage: @escaping @Sendable (String) -> Void) async throws -> [String]
}

extension Role {
    var partPrefix: String { name }

    /// The snapshot's parts that belong to this role, filtered by `wanted`.
    func ownParts(of snapshot: Snapshot, wanted: [String]?) throws -> [Part] {
        let own = snapshot.parts.filter { $0.name.hasPrefix(partPrefix + "/") }
        guard let wanted else { return own }
        for w in wanted where !own.contains(where: { $0.name == w }) {
            throw RepositoryError(.invalidArgument, "the snapshot has no part \"\(w)\" for the \(name) agent")
        }
        return own.filter { wanted.contains($0.name) }
    }
}

/// Backs up configured directories (the Che server's data, workspace /projects volumes) with full
/// metadata; restore makes each directory exactly what the snapshot holds.
struct FilesRole: Role {
    let name = "files"
    /// `files`, or `workspaces/<namespace>` for an agent serving a workspace claim.
    var partPrefix = "files"
    /// Part name (without the prefix) → directory.
    let directories: [String: String]
    let preHook: String?
    let postHook: String?
    let hookTimeout: Duration

    func backup(_ repo: Repository, parts: [String]?, installation: String?, progress: ProgressCounters, stage: @escaping @Sendable (String) -> Void)
        async throws -> [Part] {
        let wanted = try selected(parts)
        if let preHook {
            stage("running the pre-backup hook")
            try await runHook(preHook, timeout: hookTimeout, what: "pre-backup")
        }
        var result: Result<[Part], any Error>
        do {
            stage("backing up \(wanted.map(\.0).joined(separator: ", "))")
            var options = BackupOptions()
            options.connections = repo.storage.defaultConnections
            options.installation = installation
            let stored = try await repo.storeParts(wanted.map { .path($0.1, name: partPrefix + "/" + $0.0) }, options: options, progress: progress)
            result = .success(stored.parts)
        } catch {
            result = .failure(error)
        }
        if let postHook {
            stage("running the post-backup hook")
            do {
                try await runHook(postHook, timeout: hookTimeout, what: "post-backup")
            } catch {
                if case .success = result { result = .failure(error) }
            }
        }
        return try result.get()
    }

    func restore(_ repo: Repository, snapshot: Snapshot, parts: [String]?, keepExtraneous: Bool, rewrite: [Rewrite],
                 progress: ProgressCounters, stage: @escaping @Sendable (String) -> Void) async throws -> [String] {
        let own = try ownParts(of: snapshot, wanted: parts)
        var options = RestoreOptions()
        options.connections = repo.storage.defaultConnections
        options.deleteExtraneous = !keepExtraneous
        let restorer = Restorer(repository: repo, options: options, progress: progress)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for part in own {
                let short = String(part.name.dropFirst(partPrefix.count + 1))
                guard let target = directories[short] else {
                    throw RepositoryError(.invalidArgument, "part \(part.name) has no configured directory on this agent")
                }
                group.addTask {
                    stage("restoring \(part.name) into \(target)")
                    _ = try await restorer.restoreTree(part, into: target)
                }
            }
            try await group.waitForAll()
        }
        return own.map(\.name)
    }

    func selected(_ parts: [String]?) throws -> [(String, String)] {
        let all = directories.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        guard let parts else { return all }
        return try parts.map { full in
            let short = full.hasPrefix(partPrefix + "/") ? String(full.dropFirst(partPrefix.count + 1)) : full
            guard let dir = directories[short] else {
                throw RepositoryError(.invalidArgument, "this agent has no directory named \"\(short)\"")
            }
            return (short, dir)
        }
    }
}
