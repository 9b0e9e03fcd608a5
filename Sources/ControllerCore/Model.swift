import Foundation
import Repository

/// The part of Kubernetes' ObjectMeta the resources use. Fields a server sets (uid,
/// resourceVersion, generation) are carried when the mode has them.
public struct ObjectMeta: Codable, Sendable, Equatable {
    public var name: String
    public var namespace: String?
    public var creationTimestamp: String?
    public var labels: [String: String]?
    public var annotations: [String: String]?
    public var uid: String?
    public var resourceVersion: String?
    public var generation: Int64?

    public init(name: String, namespace: String? = nil, creationTimestamp: String? = nil,
                labels: [String: String]? = nil, annotations: [String: String]? = nil) {
        self.name = name
        self.namespace = namespace
        self.creationTimestamp = creationTimestamp
        self.labels = labels
        self.annotations = annotations
    }
}

public struct RestServerSpec: Codable, Sendable, Equatable {
    public var `protocol`: String?
    public var hostname: String
    public var port: Int?
    public var repositoryPath: String
    public var repositoryPasswordSecretRef: String
    public var credentialsSecretRef: String?

    public init(protocol: String? = nil, hostname: String, port: Int? = nil, repositoryPath: String,
                repositoryPasswordSecretRef: String, credentialsSecretRef: String? = nil) {
        self.protocol = `protocol`
        self.hostname = hostname
        self.port = port
        self.repositoryPath = repositoryPath
        self.repositoryPasswordSecretRef = repositoryPasswordSecretRef
        self.credentialsSecretRef = credentialsSecretRef
    }
}

public struct AwsS3ServerSpec: Codable, Sendable, Equatable {
    public var `protocol`: String?
    public var hostname: String?
    public var port: Int?
    public var repositoryPath: String
    public var repositoryPasswordSecretRef: String
    public var awsAccessKeySecretRef: String
    /// The bucket's region (che-backup's addition; default `AWS_DEFAULT_REGION`, then us-east-1).
    public var region: String?

    public init(protocol: String? = nil, hostname: String? = nil, port: Int? = nil, repositoryPath: String,
                repositoryPasswordSecretRef: String, awsAccessKeySecretRef: String, region: String? = nil) {
        self.protocol = `protocol`
        self.hostname = hostname
        self.port = port
        self.repositoryPath = repositoryPath
        self.repositoryPasswordSecretRef = repositoryPasswordSecretRef
        self.awsAccessKeySecretRef = awsAccessKeySecretRef
        self.region = region
    }
}

public struct SftpServerSpec: Codable, Sendable, Equatable {
    public var username: String
    public var hostname: String
    public var port: Int?
    public var repositoryPath: String
    public var repositoryPasswordSecretRef: String
    public var sshKeySecretRef: String

    public init(username: String, hostname: String, port: Int? = nil, repositoryPath: String,
                repositoryPasswordSecretRef: String, sshKeySecretRef: String) {
        self.username = username
        self.hostname = hostname
        self.port = port
        self.repositoryPath = repositoryPath
        self.repositoryPasswordSecretRef = repositoryPasswordSecretRef
        self.sshKeySecretRef = sshKeySecretRef
    }
}

/// A resource of one of Che's backup kinds.
public protocol CheResource: Codable, Sendable {
    static var kind: ResourceKind { get }
    var metadata: ObjectMeta { get set }
}

public struct CheBackupServerConfiguration: CheResource, Equatable {
    public static let kind = ResourceKind.backupServerConfiguration
    public struct Spec: Codable, Sendable, Equatable {
        public var rest: RestServerSpec?
        public var awss3: AwsS3ServerSpec?
        public var sftp: SftpServerSpec?
        /// The default of `includeWorkspaces` for backups to this server.
        public var includeWorkspaces: Bool?
        public init(rest: RestServerSpec? = nil, awss3: AwsS3ServerSpec? = nil, sftp: SftpServerSpec? = nil, includeWorkspaces: Bool? = nil) {
            self.rest = rest
            self.awss3 = awss3
            self.sftp = sftp
            self.includeWorkspaces = includeWorkspaces
        }
    }
    public var apiVersion = "org.eclipse.che/v1"
    public var kind = "CheBackupServerConfiguration"
    public var metadata: ObjectMeta
    public var spec: Spec

    public init(metadata: ObjectMeta, spec: Spec) {
        self.metadata = metadata
        self.spec = spec
    }

    /// Exactly one backend: the check `apply`, the engine and the modes share.
    public func validate() throws {
        let count = [spec.rest != nil, spec.awss3 != nil, spec.sftp != nil].filter { $0 }.count
        guard count == 1 else {
            throw ControllerError(.invalidResource, "CheBackupServerConfiguration \(metadata.name) must have exactly one of rest, awss3, sftp (it has \(count))")
        }
    }
}

/// An operation's state, as the Che operator wrote it.
public enum OperationState: String, Codable, Sendable {
    case inProgress = "InProgress"
    case succeeded = "Succeeded"
    case failed = "Failed"
}

/// state; stage: the step in progress; message: times or `Error: …`.
public struct OperationStatus: Codable, Sendable, Equatable {
    public var state: OperationState?
    public var stage: String?
    public var message: String?
    public var snapshotId: String?
    public var cheVersion: String?
    /// The resource's `metadata.generation` this status describes (Kubernetes mode).
    public var observedGeneration: Int64?
    /// What a successful operation left out, one sentence each (a workspace claim in use).
    public var warnings: [String]?

    public init(state: OperationState? = nil, stage: String? = nil, message: String? = nil, snapshotId: String? = nil,
                cheVersion: String? = nil) {
        self.state = state
        self.stage = stage
        self.message = message
        self.snapshotId = snapshotId
        self.cheVersion = cheVersion
    }
}

/// A resource with a status the controller writes (through `/status` in a cluster).
public protocol StatusResource: CheResource {
    associatedtype Status: Codable & Sendable & Equatable
    var status: Status? { get set }
}

/// A resource that carries out an operation and reports it in its status.
public protocol OperationResource: StatusResource where Status == OperationStatus {}

public struct CheClusterBackup: OperationResource {
    public static let kind = ResourceKind.backup
    public struct Spec: Codable, Sendable {
        public var useInternalBackupServer: Bool?
        public var backupServerConfigRef: String?
        /// Also back up the DevWorkspace claims in the users' namespaces (Kubernetes mode);
        /// default: the configuration's `includeWorkspaces`, else false.
        public var includeWorkspaces: Bool?
        public init(useInternalBackupServer: Bool? = nil, backupServerConfigRef: String? = nil, includeWorkspaces: Bool? = nil) {
            self.useInternalBackupServer = useInternalBackupServer
            self.backupServerConfigRef = backupServerConfigRef
            self.includeWorkspaces = includeWorkspaces
        }
    }
    public var apiVersion = "org.eclipse.che/v1"
    public var kind = "CheClusterBackup"
    public var metadata: ObjectMeta
    public var spec: Spec
    public var status: OperationStatus?

    public init(metadata: ObjectMeta, spec: Spec) {
        self.metadata = metadata
        self.spec = spec
    }

    public func validate() throws {
        if spec.useInternalBackupServer == true && spec.backupServerConfigRef != nil {
            throw ControllerError(.invalidResource, "CheClusterBackup \(metadata.name): use either useInternalBackupServer or backupServerConfigRef")
        }
    }
}

public struct CheClusterRestore: OperationResource {
    public static let kind = ResourceKind.restore
    public struct Spec: Codable, Sendable {
        public var snapshotId: String?
        public var backupServerConfigRef: String?
        /// Restore a snapshot of another namespace or domain, rewriting them (che-backup's addition).
        public var relocate: Bool?
        /// Restore the snapshot's workspace claims too (default true when it has them).
        public var includeWorkspaces: Bool?
        /// Restore the latest backup made before an update of Che (instead of `snapshotId`).
        public var rollback: Bool?
        public init(snapshotId: String? = nil, backupServerConfigRef: String? = nil, relocate: Bool? = nil, includeWorkspaces: Bool? = nil,
                    rollback: Bool? = nil) {
            self.snapshotId = snapshotId
            self.backupServerConfigRef = backupServerConfigRef
            self.relocate = relocate
            self.includeWorkspaces = includeWorkspaces
            self.rollback = rollback
        }
    }
    public var apiVersion = "org.eclipse.che/v1"
    public var kind = "CheClusterRestore"
    public var metadata: ObjectMeta
    public var spec: Spec
    public var status: OperationStatus?

    public init(metadata: ObjectMeta, spec: Spec) {
        self.metadata = metadata
        self.spec = spec
    }
}

/// A Kubernetes Secret: values in `stringData` or base64 `data`.
public struct Secret: CheResource {
    public static let kind = ResourceKind.secret
    public var apiVersion = "v1"
    public var kind = "Secret"
    public var metadata: ObjectMeta
    public var data: [String: String]?
    public var stringData: [String: String]?

    public init(metadata: ObjectMeta, data: [String: String]? = nil, stringData: [String: String]? = nil) {
        self.metadata = metadata
        self.data = data
        self.stringData = stringData
    }

    /// The value of `key`, from stringData or base64 data.
    public func value(_ key: String) -> String? {
        if let s = stringData?[key] { return s }
        return data?[key].flatMap { Data(base64Encoded: $0) }.map { String(decoding: $0, as: UTF8.self) }
    }

    public var keys: [String] { Set((data ?? [:]).keys).union((stringData ?? [:]).keys).sorted() }
}

public enum ResourceKind: String, CaseIterable, Sendable {
    case backupServerConfiguration = "CheBackupServerConfiguration"
    case backup = "CheClusterBackup"
    case restore = "CheClusterRestore"
    case schedule = "CheClusterBackupSchedule"
    case secret = "Secret"

    /// Accepts the kind, its plural and short forms, case-insensitively (as kubectl does).
    public init?(loose: String) {
        switch loose.lowercased() {
        case "chebackupserverconfiguration", "chebackupserverconfigurations", "backupserverconfiguration": self = .backupServerConfiguration
        case "checlusterbackup", "checlusterbackups", "backup", "backups": self = .backup
        case "checlusterrestore", "checlusterrestores", "restore", "restores": self = .restore
        case "checlusterbackupschedule", "checlusterbackupschedules", "schedule", "schedules": self = .schedule
        case "secret", "secrets": self = .secret
        default: return nil
        }
    }
}

/// Which snapshots a schedule keeps after each successful backup (restic's buckets, applied to
/// the installation's snapshots in the repository).
public struct RetentionSpec: Codable, Sendable, Equatable {
    public var keepLast: Int?
    public var keepHourly: Int?
    public var keepDaily: Int?
    public var keepWeekly: Int?
    public var keepMonthly: Int?
    public var keepYearly: Int?
    public init(keepLast: Int? = nil, keepHourly: Int? = nil, keepDaily: Int? = nil, keepWeekly: Int? = nil,
                keepMonthly: Int? = nil, keepYearly: Int? = nil) {
        self.keepLast = keepLast
        self.keepHourly = keepHourly
        self.keepDaily = keepDaily
        self.keepWeekly = keepWeekly
        self.keepMonthly = keepMonthly
        self.keepYearly = keepYearly
    }
}

extension RetentionSpec {
    /// The same buckets as the repository's retention policy (unset counts are 0).
    public var policy: RetentionPolicy {
        var policy = RetentionPolicy()
        policy.last = keepLast ?? 0
        policy.hourly = keepHourly ?? 0
        policy.daily = keepDaily ?? 0
        policy.weekly = keepWeekly ?? 0
        policy.monthly = keepMonthly ?? 0
        policy.yearly = keepYearly ?? 0
        return policy
    }
}

/// One condition of a schedule's status, as Kubernetes conditions are.
public struct ScheduleCondition: Codable, Sendable, Equatable {
    public var type: String
    public var status: String
    public var reason: String
    public var message: String
    public var lastTransitionTime: String
    public init(type: String, status: String, reason: String, message: String, lastTransitionTime: String) {
        self.type = type
        self.status = status
        self.reason = reason
        self.message = message
        self.lastTransitionTime = lastTransitionTime
    }
}

public struct ScheduleStatus: Codable, Sendable, Equatable {
    public var lastScheduleTime: String?
    public var lastSuccessfulTime: String?
    public var lastSnapshotId: String?
    public var nextScheduleTime: String?
    public var conditions: [ScheduleCondition]?
    public init() {}
}

/// Backups at the times of a cron schedule, with retention (che-backup's addition to Che's kinds).
public struct CheClusterBackupSchedule: StatusResource {
    public static let kind = ResourceKind.schedule
    public struct Spec: Codable, Sendable, Equatable {
        /// Five cron fields (minute hour day-of-month month day-of-week) or @daily-style names.
        public var schedule: String
        /// The IANA time zone the schedule is read in (default UTC).
        public var timeZone: String?
        public var backupServerConfigRef: String?
        public var useInternalBackupServer: Bool?
        public var includeWorkspaces: Bool?
        public var retention: RetentionSpec?
        public var suspend: Bool?
        public var successfulBackupsHistoryLimit: Int?
        public var failedBackupsHistoryLimit: Int?
        public init(schedule: String, timeZone: String? = nil, backupServerConfigRef: String? = nil, useInternalBackupServer: Bool? = nil,
                    includeWorkspaces: Bool? = nil, retention: RetentionSpec? = nil, suspend: Bool? = nil,
                    successfulBackupsHistoryLimit: Int? = nil, failedBackupsHistoryLimit: Int? = nil) {
            self.schedule = schedule
            self.timeZone = timeZone
            self.backupServerConfigRef = backupServerConfigRef
            self.useInternalBackupServer = useInternalBackupServer
            self.includeWorkspaces = includeWorkspaces
            self.retention = retention
            self.suspend = suspend
            self.successfulBackupsHistoryLimit = successfulBackupsHistoryLimit
            self.failedBackupsHistoryLimit = failedBackupsHistoryLimit
        }
    }
    public var apiVersion = "org.eclipse.che/v1"
    public var kind = "CheClusterBackupSchedule"
    public var metadata: ObjectMeta
    public var spec: Spec
    public var status: ScheduleStatus?

    public init(metadata: ObjectMeta, spec: Spec) {
        self.metadata = metadata
        self.spec = spec
    }

    /// The label on the CheClusterBackups a schedule creates.
    public static let label = "chebackup.eclipse.org/schedule"

    /// The parsed schedule and its time zone; a one-line error naming what is wrong.
    public func parsed() throws -> (CronSchedule, TimeZone) {
        let name = "CheClusterBackupSchedule \(metadata.name)"
        let cron: CronSchedule
        do { cron = try CronSchedule(parsing: spec.schedule) } catch let error as CronError {
            throw ControllerError(.invalidResource, "\(name): spec.schedule: \(error.message)")
        }
        var zone = TimeZone(identifier: "UTC")!
        if let text = spec.timeZone {
            guard let z = TimeZone(identifier: text) else { throw ControllerError(.invalidResource, "\(name): spec.timeZone \"\(text)\" is not a time zone") }
            zone = z
        }
        return (cron, cron.timeZone ?? zone)
    }

    public func validate() throws {
        let name = "CheClusterBackupSchedule \(metadata.name)"
        _ = try parsed()
        if spec.useInternalBackupServer == true && spec.backupServerConfigRef != nil {
            throw ControllerError(.invalidResource, "\(name): use either useInternalBackupServer or backupServerConfigRef")
        }
        for (field, value) in [("successfulBackupsHistoryLimit", spec.successfulBackupsHistoryLimit), ("failedBackupsHistoryLimit", spec.failedBackupsHistoryLimit)] {
            if let value, value < 0 { throw ControllerError(.invalidResource, "\(name): spec.\(field) must not be negative") }
        }
        if let policy = spec.retention?.policy {
            do { try policy.validate() } catch let error as RetentionError {
                throw ControllerError(.invalidResource, "\(name): spec.retention: \(error.message)")
            }
            if policy.isEmpty {
                throw ControllerError(.invalidResource, "\(name): spec.retention keeps nothing: give at least one keep count (or leave retention out to keep every backup)")
            }
        }
    }
}
