import ControllerCore
import Foundation
import KubernetesAPI
import Logging

/// `server:backup`, `server:restore` against a cluster, as chectl did: the backup server given
/// by flags becomes the configuration `eclipse-che-backup-server-config` with Secrets
/// `chectl-backup-*`; a previous `eclipse-che-backup` / `eclipse-che-restore` is deleted, a new
/// one created, and its status followed (every status write, through a watch) until it ends. The controller in the
/// cluster does the work.
public struct ClusterOperations: Sendable {
    public static let configurationName = "eclipse-che-backup-server-config"
    public static let secretPrefix = "chectl-backup-"
    public static let backupName = "eclipse-che-backup"
    public static let restoreName = "eclipse-che-restore"

    let client: KubeClient
    let logger: Logger
    let say: @Sendable (String) -> Void

    public init(client: KubeClient, logger: Logger, say: @escaping @Sendable (String) -> Void) {
        self.client = client
        self.logger = logger
        self.say = say
    }

    var store: KubeResourceStore { KubeResourceStore(client: client, namespace: client.namespace, logger: logger) }

    public func drivers() -> Drivers { KubernetesMode.drivers(client: client, logger: logger) }

    /// Writes the flags' server as chectl's configuration; returns the configuration to use.
    public func configure(_ server: BackupServer?, configName: String?) async throws -> String? {
        guard let server else {
            if let configName, try await store.get(CheBackupServerConfiguration.self, configName) == nil {
                throw ControllerError(.notFound, "CheBackupServerConfiguration \(configName) not found in namespace \(client.namespace)")
            }
            return configName
        }
        let (config, secrets) = try server.configuration(name: Self.configurationName, namespace: client.namespace,
                                                         secretPrefix: Self.secretPrefix, labels: ["app.kubernetes.io/part-of": "che-backup"])
        for secret in secrets { try await store.create(secret, replace: true) }
        try await store.create(config, replace: true)
        say("Using backup server \(server.url) (CheBackupServerConfiguration \(Self.configurationName))")
        return Self.configurationName
    }

    public func backup(configName: String?, timeout: Duration) async throws -> OperationStatus {
        let resource = CheClusterBackup(metadata: ObjectMeta(name: Self.backupName, namespace: client.namespace),
                                        spec: .init(backupServerConfigRef: configName))
        return try await runAndFollow(resource, timeout: timeout)
    }

    public func restore(configName: String?, snapshotId: String?, relocate: Bool, rollback: Bool = false, timeout: Duration) async throws -> OperationStatus {
        let resource = CheClusterRestore(metadata: ObjectMeta(name: Self.restoreName, namespace: client.namespace),
                                         spec: .init(snapshotId: snapshotId, backupServerConfigRef: configName, relocate: relocate ? true : nil,
                                                     rollback: rollback ? true : nil))
        return try await runAndFollow(resource, timeout: timeout)
    }

    func runAndFollow<R: OperationResource>(_ resource: R, timeout: Duration) async throws -> OperationStatus {
        let name = resource.metadata.name
        let deadline = ContinuousClock.now + timeout
        if try await store.delete(R.self, name) {
            say("Deleted the previous \(R.kind.rawValue) \(name)")
            while try await store.get(R.self, name) != nil {
                guard ContinuousClock.now < deadline else {
                    throw ControllerError(.store, "the previous \(R.kind.rawValue) \(name) was deleted but is still there (a finalizer?)")
                }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        try await store.create(resource, replace: false)
        say("Created \(R.kind.rawValue) \(name) in namespace \(client.namespace); waiting for the controller")
        // Every status write is a watch event: each stage is shown, however quickly they pass.
        return try await withThrowingTaskGroup(of: OperationStatus?.self) { group in
            group.addTask {
                var lastStage: String?
                for try await event in client.watch(R.kind.api, namespace: client.namespace) where event.object.name == name {
                    if event.kind == .deleted {
                        throw ControllerError(.notFound, "\(R.kind.rawValue) \(name) was deleted while it ran")
                    }
                    guard let status = try store.decode(R.self, event.object).status else { continue }
                    if let stage = status.stage, stage != lastStage, status.state == .inProgress {
                        say(stage)
                        lastStage = stage
                    }
                    switch status.state {
                    case .succeeded?: return status
                    case .failed?: throw ControllerError(.refused, String((status.message ?? "failed").trimmingPrefix("Error: ")) + " (\(R.kind.rawValue) \(name): Failed)")
                    default: continue
                    }
                }
                return nil
            }
            group.addTask {
                try await Task.sleep(until: deadline)
                throw ControllerError(.refused, "\(R.kind.rawValue) \(name) has not finished after \(timeout) (is the controller running? kubectl get \(R.kind.rawValue.lowercased()) \(name) -o yaml)")
            }
            defer { group.cancelAll() }
            guard let status = try await group.next() ?? nil else {
                throw ControllerError(.store, "the watch of \(R.kind.rawValue) \(name) ended")
            }
            return status
        }
    }
}
