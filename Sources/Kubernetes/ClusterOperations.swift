import ControllerCore
import Foundation
import KubernetesAPI
import Logging

/// `server:backup`, `server:restore` against a cluster, as chectl did: the backup server given
/// by flags becomes the configuration `eclipse-che-backup-server-config` with Secrets
/// `chectl-backup-*`; a previous `eclipse-che-backup` / `eclipse-che-restore` is deleted, a new
/// one created, and its status followed every second until it ends. The controller in the
/// cluster does the work.
public struct ClusterOperations: Sendable {
    public static let configurationName = "eclipse-che-backup-server-config"
    public static let secretPrefix = "chectl-backup-"
    public static let backupName = "eclipse-che-backup"
    public static let restoreName = "eclipse-che-restore"

    let client: KubeClient
    let logger: Logger
    let say: @Sendable (String) -> Void
    let poll: Duration

    public init(client: KubeClient, logger: Logger, say: @escaping @Sendable (String) -> Void, poll: Duration = .seconds(1)) {
        self.client = client
        self.logger = logger
        self.say = say
        self.poll = poll
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

    public func restore(configName: String?, snapshotId: String?, relocate: Bool, timeout: Duration) async throws -> OperationStatus {
        let resource = CheClusterRestore(metadata: ObjectMeta(name: Self.restoreName, namespace: client.namespace),
                                         spec: .init(snapshotId: snapshotId, backupServerConfigRef: configName, relocate: relocate ? true : nil))
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
        var lastStage: String?
        while true {
            guard let current = try await store.get(R.self, name) else {
                throw ControllerError(.notFound, "\(R.kind.rawValue) \(name) was deleted while it ran")
            }
            if let status = current.status {
                if let stage = status.stage, stage != lastStage, status.state == .inProgress {
                    say(stage)
                    lastStage = stage
                }
                switch status.state {
                case .succeeded?: return status
                case .failed?: throw ControllerError(.refused, String((status.message ?? "failed").trimmingPrefix("Error: ")) + " (\(R.kind.rawValue) \(name): Failed)")
                default: break
                }
            }
            guard ContinuousClock.now < deadline else {
                throw ControllerError(.refused, "\(R.kind.rawValue) \(name) has not finished after \(timeout) (is the controller running? kubectl get \(R.kind.rawValue.lowercased()) \(name) -o yaml)")
            }
            try await Task.sleep(for: poll)
        }
    }
}
