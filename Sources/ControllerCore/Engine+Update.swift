import Foundation
import Repository
import Storage

/// A backup before Che is updated, as the Che operator made: when Che's version (the CheCluster's
/// `status.cheVersion`, or `cheVersion` of the local configuration) is newer than the one the
/// installation's last snapshot recorded, a CheClusterBackup `backup-before-update-to-<version>`
/// (dots as dashes) is made on the configuration annotated `che.eclipse.org/backup-before-update:
/// "true"`, or the only one. Its snapshot is tagged `backup-before-update`; `server:restore
/// --rollback` (a CheClusterRestore with `rollback: true`) restores the latest such snapshot.
extension Engine {
    public static let beforeUpdateLabel = "chebackup.eclipse.org/backup-before-update"
    public static let beforeUpdateAnnotation = "che.eclipse.org/backup-before-update"
    public static let beforeUpdateTag = "backup-before-update"

    /// The CheClusterBackup made for `version`.
    public static func beforeUpdateName(_ version: String) -> String {
        let clean = version.lowercased().map { ($0.isLetter || $0.isNumber) && $0.isASCII ? String($0) : "-" }.joined()
        return "backup-before-update-to-" + String(clean.prefix(200))
    }

    /// Makes the backup when it is due; returns its name.
    @discardableResult
    public func checkBackupBeforeUpdate() async throws -> String? {
        let info = try await drivers.objects.info()
        let version = info.cheVersion
        guard !version.isEmpty, version != "unknown" else { return nil }
        let name = Self.beforeUpdateName(version)
        guard !checkedUpdates.value.contains(version) else { return nil }
        if try await drivers.resources.get(CheClusterBackup.self, name) != nil {
            checkedUpdates.withLock { _ = $0.insert(version) }
            return nil
        }
        let configs = try await drivers.resources.list(CheBackupServerConfiguration.self)
        let annotated = configs.filter { $0.metadata.annotations?[Self.beforeUpdateAnnotation] == "true" }
        guard let config = annotated.count == 1 ? annotated[0] : (annotated.isEmpty && configs.count == 1 ? configs[0] : nil) else {
            if !configs.isEmpty {
                logger.warning("no backup before the update to Che \(version): annotate one of the \(configs.count) CheBackupServerConfigurations with \(Self.beforeUpdateAnnotation): \"true\"")
            }
            checkedUpdates.withLock { _ = $0.insert(version) }
            return nil
        }
        let server = try await server(fromConfiguration: config.metadata.name)
        let last: Snapshot? = try await withJob(server, stage: { _ in }) { job in
            let repo: Repository
            do { repo = try await job.openRepository(create: false) } catch let error as RepositoryError where error.code == .notARepository {
                return nil
            }
            return try await repo.listSnapshots().last { $0.snapshot.metadata[Repository.installationKey] == info.id }?.snapshot
        }
        checkedUpdates.withLock { _ = $0.insert(version) }
        guard let last, let previous = last.metadata["cheVersion"], Self.isOlder(previous, than: version) else { return nil }
        var backup = CheClusterBackup(metadata: ObjectMeta(name: name, namespace: config.metadata.namespace, creationTimestamp: Engine.now(),
                                                           labels: [Self.beforeUpdateLabel: String(version.prefix(63))]),
                                      spec: .init(backupServerConfigRef: config.metadata.name))
        backup.status = nil
        try await drivers.resources.create(backup, replace: false)
        logger.notice("Che was updated from \(previous) to \(version): created CheClusterBackup \(name) on \(config.metadata.name)")
        await drivers.resources.record(config, reason: "BackupBeforeUpdate",
                                       message: "Che \(previous) → \(version): CheClusterBackup \(name) created", warning: false)
        return name
    }

    /// Versions compared by their numeric components (`7.99.0` < `7.100.0` < `8.0.0`); a version
    /// that is not numbers compares as text.
    public static func isOlder(_ a: String, than b: String) -> Bool {
        let numbers = { (v: String) in v.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) } }
        let (x, y) = (numbers(a), numbers(b))
        guard !x.isEmpty, !y.isEmpty else { return a < b }
        for i in 0..<max(x.count, y.count) {
            let (p, q) = (i < x.count ? x[i] : 0, i < y.count ? y[i] : 0)
            if p != q { return p < q }
        }
        return false
    }

    /// The latest snapshot of this installation tagged `backup-before-update`.
    func rollbackSnapshot(_ job: Job) async throws -> String {
        let installation = try await drivers.objects.info().id
        let repo = try await job.openRepository(create: false)
        guard let found = try await repo.listSnapshots().last(where: {
            $0.snapshot.tags.contains(Self.beforeUpdateTag) && $0.snapshot.metadata[Repository.installationKey] == installation
        }) else {
            throw ControllerError(.notFound, "no backup before an update of Che (a snapshot tagged \(Self.beforeUpdateTag)) of this installation at \(job.server.url): nothing to roll back to")
        }
        return found.id.hex
    }
}
