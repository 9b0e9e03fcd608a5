import AgentClient
import Foundation
import LineProtocol
import Logging
import Metrics
import Repository
import Storage

/// One backup or restore on one server: it talks to the agents, backs up and restores the
/// installation's objects through the mode, and writes the snapshot last (all parts or none).
/// Progress goes to `stage`.
public struct Job: Sendable {
    public let drivers: Drivers
    public let server: BackupServer
    public let pool: BlockingPool
    public let logger: Logger
    public let stage: @Sendable (String) -> Void
    /// Where the backend's known-hosts and CA files live while the job runs (libcurl reads them
    /// at each connection).
    let files: PrivateDirectory

    public static let objectsPart = "che/objects"
    /// How long an operation waits for a conflicting lock (a prune, a key removal) to go.
    public static let lockRetry: Duration = .seconds(600)

    /// Opens the server's repository, creating it on first use.
    public func openRepository(create: Bool) async throws -> Repository {
        stage("Connecting to the backup repository \(server.url)")
        let url = try server.storageURL()
        let credentials = try server.secrets.backendCredentials(filesIn: files)
        let storage = try StorageStack.open(url, credentials: credentials, pool: pool, logger: logger)
        do {
            return try await Repository.open(storage: storage, password: server.secrets.repositoryPassword, logger: logger)
        } catch let error as RepositoryError where error.code == .notARepository && create {
            stage("Initializing a new repository at \(storage.location)")
            return try await Repository.initialize(storage: storage, password: server.secrets.repositoryPassword, logger: logger)
        }
    }

    func connect<T: Sendable>(_ agent: AgentRef, _ body: @escaping @Sendable (AgentSession) async throws -> T) async throws -> T {
        let token: SharedToken
        if let own = agent.token { token = own } else { token = try await drivers.token.token() }
        return try await AgentClient.withSession(agent.endpoint, token: token, expectedRole: agent.role, body)
    }

    /// With `includeWorkspaces`, the users' workspace claims too (`Job+Workspaces.swift`).
    public func backup(includeWorkspaces: Bool = false, tags: [String] = []) async throws -> (SnapshotID, Snapshot) {
        if includeWorkspaces { _ = try workspaceVolumes() }  // before anything is done
        let repo = try await openRepository(create: true)
        // Shared: the agents take theirs too; a prune (exclusive) cannot run meanwhile.
        return try await repo.withLock(exclusive: false, operation: "server backup", retry: Self.lockRetry) { _ in
            try await backup(repo, includeWorkspaces: includeWorkspaces, tags: tags)
        }
    }

    func backup(_ repo: Repository, includeWorkspaces: Bool, tags: [String]) async throws -> (SnapshotID, Snapshot) {
        stage("Collecting Che installation data")
        let info = try await drivers.objects.info()
        let agents = try await drivers.agents.agents()
        var options = BackupOptions()
        options.connections = repo.storage.defaultConnections
        options.installation = info.id  // the parent: this installation's latest snapshot, whatever host wrote it
        let objects = try await drivers.objects.backup(into: repo, part: Self.objectsPart, options: options)
        let (server, logger, stage) = (self.server, self.logger, self.stage)
        let agentParts = try await withThrowingTaskGroup(of: [Part].self) { group in
            for agent in agents {
                group.addTask {
                    try await connect(agent) { session in
                        stage("Backing up \(agent.role) data through the agent at \(agent.endpoint)")
                        return try await session.backup(url: server.url, secrets: server.secrets, installation: info.id) { event in
                            logger.debug("\(agent.role): \(event.stage) \(event.bytes) bytes")
                        }
                    }
                }
            }
            var all: [Part] = []
            for try await parts in group { all += parts }
            return all.sorted { $0.name < $1.name }
        }
        let workspaceParts = includeWorkspaces ? try await backupWorkspaces(into: repo, installation: info.id, options: options) : []
        stage("Sending the snapshot")
        options.metadata = [
            "backupFormat": "1", "cheVersion": info.cheVersion, "namespace": info.namespace,
            "domain": info.domain, Repository.installationKey: info.id,
        ]
        options.tags = ["che"] + tags
        let result = try await repo.commitSnapshot(parts: objects.parts + agentParts + workspaceParts, options: options, parent: objects.parent)
        await recordRepositoryGauges(repo)
        return result
    }

    /// The Che operator's order: check the snapshot, stop Che, restore the databases and files
    /// through the agents, replace the objects, start Che and wait until it is ready.
    /// The snapshot's workspace claims are restored after Che is back, unless `includeWorkspaces`
    /// is false; the claims skipped (in use) are the warnings returned.
    public func restore(snapshot: String, relocate: Bool = false, includeWorkspaces: Bool = true,
                        confirm: @Sendable (Snapshot, SnapshotID) throws -> Void) async throws -> (SnapshotID, Snapshot, warnings: [String]) {
        let repo = try await openRepository(create: false)
        return try await repo.withLock(exclusive: false, operation: "server restore", retry: Self.lockRetry) { _ in
            try await restore(repo, snapshot: snapshot, relocate: relocate, includeWorkspaces: includeWorkspaces, confirm: confirm)
        }
    }

    func restore(_ repo: Repository, snapshot: String, relocate: Bool, includeWorkspaces: Bool,
                 confirm: @Sendable (Snapshot, SnapshotID) throws -> Void) async throws -> (SnapshotID, Snapshot, warnings: [String]) {
        stage("Downloading the snapshot record")
        let (id, snap) = try await repo.resolveSnapshot(snapshot)
        let info = try await drivers.objects.info()
        let relocation = try Relocation(snapshot: snap, installation: info, allowed: relocate)
        let agents = try await drivers.agents.agents().filter { agent in snap.parts.contains { $0.name.hasPrefix(agent.role + "/") } }
        try confirm(snap, id)
        let cheState = try await drivers.che.stop(stage: stage)
        do {
            stage("Restoring databases and data")
            let (server, stage) = (self.server, self.stage)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for agent in agents {
                    group.addTask {
                        try await connect(agent) { session in
                            stage("Restoring \(agent.role) data through the agent at \(agent.endpoint)")
                            _ = try await session.restore(url: server.url, secrets: server.secrets, snapshot: id, rewrite: relocation.rewrites)
                        }
                    }
                }
                try await group.waitForAll()
            }
            if let objects = snap.parts.first(where: { $0.name == Self.objectsPart }) {
                stage("Cleaning up the existing installation and restoring cluster objects")
                try await drivers.objects.restore(objects, from: repo, relocation: relocation, stage: stage)
            }
        } catch {
            // Che is started again even so: a failed restore must not also leave Che down.
            do { try await drivers.che.start(cheState, stage: { _ in }) } catch {
                logger.warning("cannot start Che again after the failed restore: \(describe(error))")
            }
            throw error
        }
        try await drivers.che.start(cheState, stage: stage)
        let warnings = includeWorkspaces ? try await restoreWorkspaces(of: snap, id: id, from: repo) : []
        await recordRepositoryGauges(repo)
        return (id, snap, warnings)
    }

    /// The repository's size and snapshot count after an operation (metrics; a failure to list
    /// is logged, never fails the operation).
    func recordRepositoryGauges(_ repo: Repository) async {
        do {
            let snapshots = try await repo.storage.list(.snapshots).count
            let dimensions = [("repository", server.url)]
            Gauge(label: "chebackup_repository_size_bytes", dimensions: dimensions).record(repo.index.packs.values.reduce(Int64(0), +))
            Gauge(label: "chebackup_repository_snapshots", dimensions: dimensions).record(snapshots)
        } catch {
            logger.info("cannot measure the repository at \(server.url): \(describe(error))")
        }
    }
}
