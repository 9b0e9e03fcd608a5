import ControllerCore
import Foundation
import LocalMode
import Logging
import Repository
import Storage
import Testing
import TestSupport

/// CheClusterBackupSchedule: when a backup is due (missed ones at most one period late), never two
/// at once, the history limits, bad specs in the status; and end to end in local mode, a scheduled
/// backup followed by its retention.
@Suite struct ScheduleTests {
    static func at(_ text: String) -> Date { parseTime(text)! }
    static let utc = TimeZone(identifier: "UTC")!

    @Test(arguments: [
        // (schedule, last run, created, now, expected)
        ("*/5 * * * *", nil, "2026-12-02T10:00:00Z", "2026-12-02T10:03:00Z", "wait 2026-12-02T10:05:00Z"),
        ("*/5 * * * *", nil, "2026-12-02T10:00:00Z", "2026-12-02T10:05:10Z", "run 2026-12-02T10:05:00Z missed 0"),
        ("*/5 * * * *", "2026-12-02T10:05:00Z", "2026-12-02T10:00:00Z", "2026-12-02T10:07:00Z", "wait 2026-12-02T10:10:00Z"),
        // Missed while the controller was down: the latest due time (less than one period late)
        // runs once; those before it, a period or more late, are skipped and counted.
        ("0 3 * * *", "2026-12-01T03:00:00Z", "2026-11-01T00:00:00Z", "2026-12-02T20:00:00Z", "run 2026-12-02T03:00:00Z missed 0"),
        ("0 3 * * *", "2026-11-28T03:00:00Z", "2026-11-01T00:00:00Z", "2026-12-03T03:30:00Z", "run 2026-12-03T03:00:00Z missed 4"),
        ("0 * * * *", "2026-12-02T07:00:00Z", "2026-11-01T00:00:00Z", "2026-12-02T09:00:00Z", "run 2026-12-02T09:00:00Z missed 1"),
        ("0 0 1 * *", "2026-10-01T00:00:00Z", "2026-01-01T00:00:00Z", "2026-12-15T00:00:00Z", "run 2026-12-01T00:00:00Z missed 1"),
        ("@daily", nil, "2026-12-02T10:00:00Z", "2026-12-02T23:59:00Z", "wait 2026-12-03T00:00:00Z"),
    ] as [(String, String?, String, String, String)])
    func whenABackupIsDue(schedule: String, last: String?, created: String, now: String, expected: String) throws {
        let cron = try CronSchedule(parsing: schedule)
        let decision = ScheduleDecision.decide(cron, in: Self.utc, lastScheduled: last.map(Self.at), created: Self.at(created), now: Self.at(now))
        let text: String
        switch decision {
        case .wait(let next): text = "wait \(next.map(formatTime) ?? "never")"
        case .run(let at, _, let missed): text = "run \(formatTime(at)) missed \(missed)"
        }
        #expect(text.replacingOccurrences(of: ".000", with: "") == expected)
    }

    /// An engine over a local state directory whose agents and servers are never reached.
    func engine(_ dir: TempDir) throws -> (Engine, FileResourceStore) {
        try """
            id: test
            namespace: eclipse-che
            domain: che.test
            cheVersion: 7.99.0
            objectsDir: \(dir.file("objects"))
            tokenFile: \(dir.file("token"))
            stateDir: \(dir.file("state"))
            agents: []
            """.write(toFile: dir.file("chebackup.yaml"), atomically: true, encoding: .utf8)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let installation = try Installation.load(dir.file("chebackup.yaml"))
        let engine = Engine(drivers: LocalMode.drivers(installation, logger: logger), pool: BlockingPool(threads: 1), logger: logger)
        return (engine, FileResourceStore(stateDir: dir.file("state"), logger: logger))
    }

    func schedule(_ spec: CheClusterBackupSchedule.Spec, created: String = "2026-12-02T10:00:00Z") -> CheClusterBackupSchedule {
        CheClusterBackupSchedule(metadata: ObjectMeta(name: "nightly", namespace: "eclipse-che", creationTimestamp: created), spec: spec)
    }

    func backups(_ store: FileResourceStore) async throws -> [CheClusterBackup] {
        try await store.list(CheClusterBackup.self).filter { $0.metadata.labels?[CheClusterBackupSchedule.label] == "nightly" }
    }

    @Test func oneBackupPerDueTimeNeverTwoAtOnce() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (engine, store) = try engine(dir)
        try store.write(schedule(.init(schedule: "*/5 * * * *", useInternalBackupServer: true, includeWorkspaces: false)))
        #expect(try await engine.reconcileSchedules(now: Self.at("2026-12-02T10:03:00Z")).isEmpty)
        #expect(try store.load(CheClusterBackupSchedule.self, "nightly").status?.nextScheduleTime == "2026-12-02T10:05:00.000Z")
        let first = try await engine.reconcileSchedules(now: Self.at("2026-12-02T10:05:02Z"))
        #expect(first == ["nightly-202612021005"])
        let made = try #require(try await backups(store).first)
        #expect(made.spec.useInternalBackupServer == true && made.spec.includeWorkspaces == false)
        #expect(try await engine.reconcileSchedules(now: Self.at("2026-12-02T10:05:30Z")).isEmpty, "one due time, one backup")
        // The next due time comes while the first still runs: it waits.
        #expect(try await engine.reconcileSchedules(now: Self.at("2026-12-02T10:10:03Z")).isEmpty)
        try await store.updateStatus(CheClusterBackup.self, "nightly-202612021005", OperationStatus(state: .succeeded, snapshotId: "aabbccdd"))
        // It ended within the period: the waiting due time runs now.
        #expect(try await engine.reconcileSchedules(now: Self.at("2026-12-02T10:11:00Z")) == ["nightly-202612021010"])
        let status = try #require(try store.load(CheClusterBackupSchedule.self, "nightly").status)
        #expect(status.lastScheduleTime == "2026-12-02T10:10:00.000Z")
        #expect(status.conditions?.first { $0.type == "Ready" }?.status == "True")
    }

    @Test func historyLimitsKeepTheNewestFinishedBackups() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (engine, store) = try engine(dir)
        try store.write(schedule(.init(schedule: "@daily", successfulBackupsHistoryLimit: 2, failedBackupsHistoryLimit: 1)))
        for i in 0..<7 {
            var b = CheClusterBackup(metadata: ObjectMeta(name: "nightly-\(i)", creationTimestamp: "2026-11-2\(i)T03:00:00.000Z",
                                                          labels: [CheClusterBackupSchedule.label: "nightly"]), spec: .init())
            b.status = OperationStatus(state: i % 2 == 0 ? .succeeded : .failed)
            try store.write(b)
        }
        try store.write(CheClusterBackup(metadata: ObjectMeta(name: "manual", creationTimestamp: "2026-11-01T00:00:00.000Z"), spec: .init()))
        _ = try await engine.reconcileSchedules(now: Self.at("2026-12-02T10:00:00Z"))
        let left = try await backups(store).map(\.metadata.name).sorted()
        #expect(left == ["nightly-4", "nightly-5", "nightly-6"], "\(left)")
        #expect(try await store.get(CheClusterBackup.self, "manual") != nil, "a backup the schedule did not make stays")
    }

    @Test(arguments: [
        (CheClusterBackupSchedule.Spec(schedule: "0 25 * * *"), "spec.schedule"),
        (CheClusterBackupSchedule.Spec(schedule: "* * *"), "spec.schedule"),
        (CheClusterBackupSchedule.Spec(schedule: "@daily", timeZone: "Mars/Olympus"), "spec.timeZone"),
        (CheClusterBackupSchedule.Spec(schedule: "@daily", retention: RetentionSpec(keepLast: 0)), "keeps nothing"),
        (CheClusterBackupSchedule.Spec(schedule: "@daily", retention: RetentionSpec(keepDaily: -3)), "spec.retention"),
        (CheClusterBackupSchedule.Spec(schedule: "@daily", successfulBackupsHistoryLimit: -1), "must not be negative"),
        (CheClusterBackupSchedule.Spec(schedule: "@daily", backupServerConfigRef: "x", useInternalBackupServer: true), "either"),
    ])
    func aBadScheduleIsReportedInItsStatusAndStartsNothing(spec: CheClusterBackupSchedule.Spec, expected: String) async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (engine, store) = try engine(dir)
        try store.write(schedule(spec, created: "2026-11-01T00:00:00Z"))
        #expect(try await engine.reconcileSchedules(now: Self.at("2026-12-02T10:00:00Z")).isEmpty)
        let ready = try #require(try store.load(CheClusterBackupSchedule.self, "nightly").status?.conditions?.first { $0.type == "Ready" })
        #expect(ready.status == "False" && ready.reason == "InvalidSpec")
        #expect(ready.message.contains(expected) && !ready.message.contains("\n"), "\(ready.message)")
        #expect(try await backups(store).isEmpty)
    }

    @Test func aSuspendedScheduleStartsNothing() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (engine, store) = try engine(dir)
        try store.write(schedule(.init(schedule: "*/5 * * * *", suspend: true)))
        #expect(try await engine.reconcileSchedules(now: Self.at("2026-12-02T10:05:02Z")).isEmpty)
        let status = try #require(try store.load(CheClusterBackupSchedule.self, "nightly").status)
        #expect(status.nextScheduleTime == nil && status.conditions?.first?.reason == "Suspended")
    }
}

@Suite struct BackupBeforeUpdateTests {
    @Test(arguments: [("7.99.0", "8.0.0", true), ("7.99.0", "7.100.0", true), ("7.100.0", "7.99.0", false), ("8.0.0", "8.0.0", false),
                      ("8.0", "8.0.1", true), ("next", "next", false), ("7.42.0-SNAPSHOT", "7.42.1", true)])
    func versionsCompareByTheirNumbers(a: String, b: String, older: Bool) {
        #expect(Engine.isOlder(a, than: b) == older)
    }

    @Test func theBackupIsNamedAfterTheVersion() {
        #expect(Engine.beforeUpdateName("7.99.0") == "backup-before-update-to-7-99-0")
        #expect(Engine.beforeUpdateName("7.42.0-SNAPSHOT") == "backup-before-update-to-7-42-0-snapshot")
    }
}
