import Foundation
import LineProtocol
import Logging
import Metrics
import Repository
import Storage

/// The one engine: it runs CheClusterBackup and CheClusterRestore resources through a mode's
/// drivers and keeps their status. Only a new resource starts work: one with a state is left
/// alone. The `server:*` commands create a resource and run it here; `chebackup controller`
/// runs whatever is created.
public struct Engine: Sendable {
    public let drivers: Drivers
    public let pool: BlockingPool
    public let logger: Logger

    /// The internal backup server's configuration (and Secret).
    public static let internalConfigurationName = "chebackup-internal"
    /// Che versions whose backup before the update was looked at already (by this process).
    let checkedUpdates = Locked<Set<String>>([])

    public init(drivers: Drivers, pool: BlockingPool, logger: Logger) {
        self.drivers = drivers
        self.pool = pool
        self.logger = logger
    }

    public static func now() -> String { formatTime(Date()) }

    // MARK: servers

    /// The server a CheBackupServerConfiguration describes, with its secrets.
    public func server(fromConfiguration name: String) async throws -> BackupServer {
        guard let config = try await drivers.resources.get(CheBackupServerConfiguration.self, name) else {
            throw ControllerError(.notFound, "CheBackupServerConfiguration \(name) not found")
        }
        return try await BackupServer(configuration: config, secrets: drivers.secrets, isInternal: name == Self.internalConfigurationName)
    }

    /// Which server an operation uses: the named configuration; the internal server when asked;
    /// else the mode's default; else the only configuration there is; else the internal server.
    public func resolve(configRef: String?, useInternal: Bool?) async throws -> BackupServer {
        if let configRef, !configRef.isEmpty { return try await server(fromConfiguration: configRef) }
        if useInternal == true { return try await server(fromConfiguration: try await drivers.internalServer.ensureConfiguration()) }
        if let saved = try await drivers.defaultServer() { return saved }
        let configs = try await drivers.resources.list(CheBackupServerConfiguration.self).map(\.metadata.name)
            .filter { $0 != Self.internalConfigurationName }
        if configs.count == 1 { return try await server(fromConfiguration: configs[0]) }
        if configs.count > 1 {
            throw ControllerError(.invalidResource, "there are \(configs.count) CheBackupServerConfigurations (\(configs.joined(separator: ", "))): name one with backupServerConfigRef")
        }
        return try await server(fromConfiguration: try await drivers.internalServer.ensureConfiguration())
    }

    /// Runs `body` with a job on the server (the internal server running when it is the one).
    public func withJob<T: Sendable>(_ server: BackupServer, stage: @escaping @Sendable (String) -> Void,
                                     _ body: (Job) async throws -> T) async throws -> T {
        let job = Job(drivers: drivers, server: server, pool: pool, logger: logger, stage: stage, files: try PrivateDirectory())
        if server.isInternal { return try await drivers.internalServer.withRunning(stage: stage) { try await body(job) } }
        return try await body(job)
    }

    // MARK: operations

    /// Runs a new CheClusterBackup; returns its final status.
    public func runBackup(_ name: String, onStage: @escaping @Sendable (String) -> Void = { _ in }) async throws -> OperationStatus {
        try await run(CheClusterBackup.self, name, what: "Backup", firstStage: "Setting up", onStage: onStage) { resource, stage in
            try resource.validate()
            let server = try await resolve(configRef: resource.spec.backupServerConfigRef, useInternal: resource.spec.useInternalBackupServer)
            let workspaces = resource.spec.includeWorkspaces ?? server.includeWorkspaces ?? false
            var tags: [String] = []
            if resource.metadata.labels?[Self.beforeUpdateLabel] != nil { tags.append(Self.beforeUpdateTag) }
            if let schedule = resource.metadata.labels?[CheClusterBackupSchedule.label] { tags.append("schedule:" + schedule) }
            let (id, snapshot) = try await withJob(server, stage: stage) { try await $0.backup(includeWorkspaces: workspaces, tags: tags) }
            Counter(label: "chebackup_read_bytes_total").increment(by: Int64(snapshot.totalBytes))
            Counter(label: "chebackup_stored_bytes_total").increment(by: snapshot.parts.reduce(Int64(0)) { $0 + $1.stats.newBytes })
            return OperationStatus(snapshotId: id.short, cheVersion: snapshot.metadata["cheVersion"])
        }
    }

    /// Runs a new CheClusterRestore; returns its final status.
    public func runRestore(_ name: String, confirm: @escaping @Sendable (Snapshot, SnapshotID) throws -> Void = { _, _ in },
                           onStage: @escaping @Sendable (String) -> Void = { _ in }) async throws -> OperationStatus {
        try await run(CheClusterRestore.self, name, what: "Restore", firstStage: "Downloading", onStage: onStage) { resource, stage in
            if resource.spec.rollback == true && !(resource.spec.snapshotId ?? "").isEmpty && resource.spec.snapshotId != "latest" {
                throw ControllerError(.invalidResource, "CheClusterRestore \(name): use either rollback or snapshotId")
            }
            let server = try await resolve(configRef: resource.spec.backupServerConfigRef, useInternal: nil)
            let requested = (resource.spec.snapshotId ?? "").isEmpty ? "latest" : resource.spec.snapshotId!
            let (id, snap, warnings) = try await withJob(server, stage: stage) { job in
                let snapshot = resource.spec.rollback == true ? try await rollbackSnapshot(job) : requested
                return try await job.restore(snapshot: snapshot, relocate: resource.spec.relocate ?? false,
                                             includeWorkspaces: resource.spec.includeWorkspaces ?? true, confirm: confirm)
            }
            var status = OperationStatus(snapshotId: id.short, cheVersion: snap.metadata["cheVersion"])
            status.warnings = warnings.isEmpty ? nil : warnings
            return status
        }
    }

    /// The life of an operation resource: InProgress with each stage saved as it starts, then
    /// Succeeded with start and finish times, or Failed with `Error: …`. One that has a state
    /// already is left alone (only creating starts work).
    func run<R: OperationResource>(_ type: R.Type, _ name: String, what: String, firstStage: String,
                                   onStage: @escaping @Sendable (String) -> Void,
                                   work: (R, @escaping @Sendable (String) -> Void) async throws -> OperationStatus) async throws -> OperationStatus {
        guard let resource = try await drivers.resources.get(R.self, name) else {
            throw ControllerError(.notFound, "\(R.kind.rawValue) \(name) not found")
        }
        if let status = resource.status, status.state != nil { return status }
        let started = Self.now()
        let clock = ContinuousClock.now
        var first = OperationStatus(state: .inProgress, stage: firstStage, message: "\(what) started at \(started)")
        first.observedGeneration = resource.metadata.generation
        let writer = StatusWriter(store: drivers.resources, type: R.self, name: name, initial: first, logger: logger)
        try await writer.write(first)
        await drivers.resources.record(resource, reason: "\(what)Started", message: "\(what) started", warning: false)
        let stage: @Sendable (String) -> Void = { text in
            onStage(text)
            writer.stage(text)
        }
        var final: OperationStatus
        do {
            final = try await work(resource, stage)
            final.state = .succeeded
            final.stage = "Done"
            final.message = "\(what)\(final.snapshotId.map { " of " + $0 } ?? "") started at \(started), finished at \(Self.now())"
            if let warnings = final.warnings, let first = warnings.first {
                final.message! += "; \(warnings.count) warning\(warnings.count == 1 ? "" : "s"): \(first)\(warnings.count > 1 ? " (all in status.warnings)" : "")"
            }
        } catch {
            final = OperationStatus(state: .failed, stage: writer.current.stage, message: "Error: \(describe(error))")
        }
        final.observedGeneration = resource.metadata.generation
        let kind = what.lowercased()
        Counter(label: "chebackup_operations_total", dimensions: [("kind", kind), ("outcome", final.state == .succeeded ? "succeeded" : "failed")]).increment()
        Metrics.Timer(label: "chebackup_operation_duration_seconds", dimensions: [("kind", kind)]).record(duration: ContinuousClock.now - clock)
        try await writer.write(final)
        logger.notice("\(R.kind.rawValue) \(name): \(final.state?.rawValue ?? "") \(final.message ?? "")")
        let succeeded = final.state == .succeeded
        await drivers.resources.record(resource, reason: succeeded ? "\(what)Succeeded" : "\(what)Failed",
                                       message: final.message ?? "", warning: !succeeded)
        return final
    }

    /// Operations a previous controller left InProgress are marked Failed, saying what happened:
    /// never InProgress forever, never a half-restored installation reported as Succeeded.
    public func failInterrupted() async throws {
        try await failInterrupted(CheClusterBackup.self, "no snapshot was written. Create a new CheClusterBackup.")
        try await failInterrupted(CheClusterRestore.self, "the installation may be partly restored. Create a new CheClusterRestore.")
    }

    private func failInterrupted<R: OperationResource>(_ type: R.Type, _ consequence: String) async throws {
        for r in try await drivers.resources.list(R.self) {
            guard var status = r.status, status.state == .inProgress else { continue }
            status.state = .failed
            status.message = "Error: the controller stopped during \"\(status.stage ?? "?")\"; \(consequence)"
            try await drivers.resources.updateStatus(R.self, r.metadata.name, status)
            await drivers.resources.record(r, reason: "Interrupted", message: status.message ?? "", warning: true)
        }
    }

    /// One pass: creates the backups schedules have due, then runs every new backup and restore.
    public func reconcileOnce() async throws {
        try await checkBackupBeforeUpdate()
        try await reconcileSchedules()
        for r in try await drivers.resources.list(CheClusterBackup.self) where r.status?.state == nil {
            _ = try await runBackup(r.metadata.name)
            try await scheduledBackupFinished(r.metadata.name)
        }
        for r in try await drivers.resources.list(CheClusterRestore.self) where r.status?.state == nil {
            _ = try await runRestore(r.metadata.name)
        }
    }

    /// Runs new operations as they are created, one at a time, until cancelled; looks at the
    /// schedules every `scheduleInterval`.
    public func runForever(scheduleInterval: Duration = .seconds(15)) async throws {
        let (queue, continuation) = AsyncStream.makeStream(of: (ResourceKind, String).self)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for try await r in drivers.resources.changes(CheClusterBackup.self) where r.status?.state == nil {
                    continuation.yield((.backup, r.metadata.name))
                }
            }
            group.addTask {
                for try await r in drivers.resources.changes(CheClusterRestore.self) where r.status?.state == nil {
                    continuation.yield((.restore, r.metadata.name))
                }
            }
            group.addTask {
                for await (kind, name) in queue {
                    do {
                        // `run` re-reads the resource: one seen twice before it ran runs once.
                        if kind == .backup {
                            _ = try await runBackup(name)
                            try await scheduledBackupFinished(name)
                        } else {
                            _ = try await runRestore(name)
                        }
                    } catch {
                        logger.error("\(kind.rawValue) \(name): \(describe(error))")
                    }
                }
            }
            group.addTask {
                while true {
                    do { try await checkBackupBeforeUpdate() } catch { logger.error("backup before update: \(describe(error))") }
                    do { try await reconcileSchedules() } catch { logger.error("schedules: \(describe(error))") }
                    try await Task.sleep(for: scheduleInterval)
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }
}

/// Writes an operation's status in order: stages as they start (a failed stage write is logged
/// and the next write carries it again), the first and last writes awaited and their failures thrown.
final class StatusWriter: Sendable {
    private let store: any ResourceStore
    private let save: @Sendable (OperationStatus) async throws -> Void
    private let state: Locked<(status: OperationStatus, chain: Task<Void, Never>?)>
    private let logger: Logger

    init<R: OperationResource>(store: any ResourceStore, type: R.Type, name: String, initial: OperationStatus, logger: Logger) {
        self.store = store
        self.logger = logger
        state = Locked((initial, nil))
        save = { try await store.updateStatus(R.self, name, $0) }
    }

    var current: OperationStatus { state.value.status }

    func stage(_ text: String) {
        state.withLock { s in
            s.status.stage = text
            let status = s.status
            let previous = s.chain
            s.chain = Task { [save, logger] in
                await previous?.value
                do { try await save(status) } catch { logger.warning("cannot save the stage \"\(text)\": \(describe(error))") }
            }
        }
    }

    func write(_ status: OperationStatus) async throws {
        let previous = state.withLock { s in
            s.status = status
            return s.chain
        }
        await previous?.value
        try await save(status)
    }
}
