import Foundation
import Metrics
import Repository
import Storage

/// What a schedule should do now.
public enum ScheduleDecision: Sendable, Equatable {
    /// Nothing is due; the next time is given.
    case wait(next: Date?)
    /// The due time `at` has come: back up now. `missed` earlier due times since the last run
    /// (the controller was down) are more than one period late and are skipped.
    case run(at: Date, next: Date?, missed: Int)

    /// `now` against the schedule: the latest due time after the last one that ran (or the
    /// schedule's creation). It is always less than one period late (the next one has not come
    /// yet), so after a downtime it runs once; the due times before it are skipped and counted.
    public static func decide(_ cron: CronSchedule, in zone: TimeZone, lastScheduled: Date?, created: Date, now: Date) -> ScheduleDecision {
        let baseline = lastScheduled ?? created
        let upcoming = cron.next(after: now, in: zone)
        guard let due = cron.previous(atOrBefore: now, in: zone), due > baseline else { return .wait(next: upcoming) }
        var missed = 0
        var cursor = cron.next(after: baseline, in: zone)
        while let time = cursor, time < due, missed < 1000 {
            missed += 1
            cursor = cron.next(after: time, in: zone)
        }
        return .run(at: due, next: upcoming, missed: missed)
    }
}

/// Schedules: a CheClusterBackup at each due time (never two at once for one schedule), the
/// retention applied after each success (forget and prune), and the history limits.
extension Engine {
    /// One look at every schedule: creates the backups that are due. Returns their names.
    @discardableResult
    public func reconcileSchedules(now: Date = Date()) async throws -> [String] {
        var created: [String] = []
        let schedules = try await drivers.resources.list(CheClusterBackupSchedule.self)
        guard !schedules.isEmpty else { return [] }
        // One list of the backups for every schedule of this look, not one list each.
        let backups = try await drivers.resources.list(CheClusterBackup.self)
        for schedule in schedules {
            do {
                if let name = try await reconcile(schedule, backups: Self.own(schedule.metadata.name, of: backups), now: now) { created.append(name) }
            } catch {
                logger.error("CheClusterBackupSchedule \(schedule.metadata.name): \(describe(error))")
            }
        }
        return created
    }

    func reconcile(_ schedule: CheClusterBackupSchedule, backups: [CheClusterBackup], now: Date) async throws -> String? {
        let name = schedule.metadata.name
        var status = schedule.status ?? ScheduleStatus()
        let cron: CronSchedule, zone: TimeZone
        do {
            try schedule.validate()
            (cron, zone) = try schedule.parsed()
        } catch {
            status.nextScheduleTime = nil
            setCondition(&status, type: "Ready", ok: false, reason: "InvalidSpec", message: describe(error))
            try await saveStatus(name, schedule.status, status)
            return nil
        }
        setCondition(&status, type: "Ready", ok: true, reason: "Valid", message: "schedule \(schedule.spec.schedule) in \(zone.identifier)")
        try await applyHistoryLimits(schedule, backups)
        if schedule.spec.suspend == true {
            status.nextScheduleTime = nil
            setCondition(&status, type: "Ready", ok: true, reason: "Suspended", message: "spec.suspend is true: no backups are started")
            try await saveStatus(name, schedule.status, status)
            return nil
        }
        let decision = ScheduleDecision.decide(cron, in: zone, lastScheduled: status.lastScheduleTime.flatMap(parseTime),
                                               created: schedule.metadata.creationTimestamp.flatMap(parseTime) ?? now, now: now)
        var createdName: String?
        switch decision {
        case .wait(let next):
            status.nextScheduleTime = next.map(formatTime)
        case .run(let at, let next, let missed):
            status.nextScheduleTime = next.map(formatTime)
            if missed > 0 {
                logger.warning("CheClusterBackupSchedule \(name): \(missed) due time(s) before \(formatTime(at)) were missed (the controller was not running) and skipped")
                setCondition(&status, type: "Missed", ok: false, reason: "MissedWhileDown",
                             message: "\(missed) due time(s) before \(formatTime(at)) passed while the controller was not running: skipped, \(formatTime(at)) runs")
            }
            if let running = backups.first(where: { $0.status?.state == nil || $0.status?.state == .inProgress }) {
                // Never two at once: this due time waits (and runs if the other ends within the period).
                logger.notice("CheClusterBackupSchedule \(name): due at \(formatTime(at)), but \(running.metadata.name) is still running")
                break
            }
            let backupName = Self.backupName(name, at)
            var backup = CheClusterBackup(metadata: ObjectMeta(name: backupName, namespace: schedule.metadata.namespace, creationTimestamp: Engine.now(),
                                                               labels: [CheClusterBackupSchedule.label: name]),
                                          spec: .init(useInternalBackupServer: schedule.spec.useInternalBackupServer,
                                                      backupServerConfigRef: schedule.spec.backupServerConfigRef,
                                                      includeWorkspaces: schedule.spec.includeWorkspaces))
            backup.status = nil
            if try await drivers.resources.get(CheClusterBackup.self, backupName) == nil {
                try await drivers.resources.create(backup, replace: false)
                await drivers.resources.record(schedule, reason: "BackupCreated", message: "created CheClusterBackup \(backupName) for \(formatTime(at))", warning: false)
                createdName = backupName
            }
            status.lastScheduleTime = formatTime(at)
        }
        try await saveStatus(name, schedule.status, status)
        return createdName
    }

    /// `<schedule>-<yyyyMMddHHmm>` of the due time (UTC), so one due time makes one backup.
    static func backupName(_ schedule: String, _ at: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyyMMddHHmm"
        let suffix = "-" + f.string(from: at)
        return String(schedule.prefix(253 - suffix.count)) + suffix
    }

    func ownBackups(_ schedule: String) async throws -> [CheClusterBackup] {
        Self.own(schedule, of: try await drivers.resources.list(CheClusterBackup.self))
    }

    /// The backups `schedule` made, oldest first.
    static func own(_ schedule: String, of all: [CheClusterBackup]) -> [CheClusterBackup] {
        all.filter { $0.metadata.labels?[CheClusterBackupSchedule.label] == schedule }
            .sorted { ($0.metadata.creationTimestamp ?? "", $0.metadata.name) < ($1.metadata.creationTimestamp ?? "", $1.metadata.name) }
    }

    /// Finished backups beyond the limits go, oldest first (defaults: 3 succeeded, 1 failed).
    func applyHistoryLimits(_ schedule: CheClusterBackupSchedule, _ backups: [CheClusterBackup]) async throws {
        for (state, limit) in [(OperationState.succeeded, schedule.spec.successfulBackupsHistoryLimit ?? 3),
                               (.failed, schedule.spec.failedBackupsHistoryLimit ?? 1)] {
            let finished = backups.filter { $0.status?.state == state }
            for old in finished.dropLast(limit) {
                _ = try await drivers.resources.delete(CheClusterBackup.self, old.metadata.name)
                logger.info("CheClusterBackupSchedule \(schedule.metadata.name): removed \(old.metadata.name) (history limit \(limit))")
            }
        }
    }

    /// After a backup ends: if a schedule made it, its status, and on success its retention.
    public func scheduledBackupFinished(_ backupName: String) async throws {
        guard let backup = try await drivers.resources.get(CheClusterBackup.self, backupName),
              let scheduleName = backup.metadata.labels?[CheClusterBackupSchedule.label],
              let schedule = try await drivers.resources.get(CheClusterBackupSchedule.self, scheduleName),
              let state = backup.status?.state, state != .inProgress else { return }
        var status = schedule.status ?? ScheduleStatus()
        if state == .failed {
            setCondition(&status, type: "LastBackup", ok: false, reason: "BackupFailed", message: "\(backupName): \(backup.status?.message ?? "failed")")
            try await saveStatus(scheduleName, schedule.status, status)
            return
        }
        status.lastSuccessfulTime = Engine.now()
        Gauge(label: "chebackup_schedule_last_success_timestamp_seconds", dimensions: [("schedule", scheduleName)]).record(Date().timeIntervalSince1970)
        status.lastSnapshotId = backup.status?.snapshotId
        setCondition(&status, type: "LastBackup", ok: true, reason: "BackupSucceeded", message: "\(backupName): snapshot \(backup.status?.snapshotId ?? "?")")
        if let retention = schedule.spec.retention {
            do {
                let outcome = try await applyRetention(retention, schedule: schedule)
                setCondition(&status, type: "Retention", ok: true, reason: "Applied", message: outcome)
            } catch {
                setCondition(&status, type: "Retention", ok: false, reason: "Failed", message: describe(error))
            }
        }
        try await saveStatus(scheduleName, schedule.status, status)
        try await applyHistoryLimits(schedule, try await ownBackups(scheduleName))
    }

    /// Forget and prune on the schedule's server, under an exclusive lock (waiting up to 10
    /// minutes for backups to end): the installation's snapshots, whatever host wrote them.
    func applyRetention(_ spec: RetentionSpec, schedule: CheClusterBackupSchedule) async throws -> String {
        let server = try await resolve(configRef: schedule.spec.backupServerConfigRef, useInternal: schedule.spec.useInternalBackupServer)
        let policy = spec.policy
        guard !policy.isEmpty else { return "no retention counts: every snapshot kept" }
        let zone = (try? schedule.parsed().1) ?? TimeZone(identifier: "UTC")!
        return try await withJob(server, stage: { _ in }) { job in
            let installation = try await drivers.objects.info().id
            let repo = try await job.openRepository(create: false)
            return try await repo.withLock(exclusive: true, operation: "retention of schedule \(schedule.metadata.name)", retry: .seconds(600)) { _ in
                let snapshots = try await repo.listSnapshots().filter { $0.snapshot.metadata[Repository.installationKey] == installation }
                let decisions = Retention.apply(snapshots.map { RetentionSnapshot(id: $0.id.hex, time: $0.snapshot.time, tags: $0.snapshot.tags) },
                                                policy: policy, timeZone: zone, now: Date())
                let remove = decisions.filter { !$0.keep }.compactMap { ObjectID(hex: $0.snapshot.id) }
                try await repo.forget(remove)
                var options = Repository.PruneOptions()
                options.connections = repo.storage.defaultConnections
                let report = remove.isEmpty ? nil : try await repo.prune(options)
                await job.recordRepositoryGauges(repo)
                let freed = report.map { $0.bytesBefore - $0.bytesAfter } ?? 0
                return "kept \(decisions.count - remove.count), removed \(remove.count) snapshots, freed \(freed) bytes"
            }
        }
    }

    func setCondition(_ status: inout ScheduleStatus, type: String, ok: Bool, reason: String, message: String) {
        var conditions = status.conditions ?? []
        let value = ok ? "True" : "False"
        if let i = conditions.firstIndex(where: { $0.type == type }) {
            let changed = conditions[i].status != value
            conditions[i].reason = reason
            conditions[i].message = message
            if changed {
                conditions[i].status = value
                conditions[i].lastTransitionTime = Engine.now()
            }
        } else {
            conditions.append(ScheduleCondition(type: type, status: value, reason: reason, message: message, lastTransitionTime: Engine.now()))
        }
        status.conditions = conditions
    }

    func saveStatus(_ name: String, _ old: ScheduleStatus?, _ new: ScheduleStatus) async throws {
        guard old != new else { return }
        try await drivers.resources.updateStatus(CheClusterBackupSchedule.self, name, new)
    }
}
