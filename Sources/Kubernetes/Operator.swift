import ControllerCore
import Foundation
import KubernetesAPI
import Logging
import Storage

/// The settings of Kubernetes mode.
public struct OperatorSettings: Sendable {
    /// How long a restore waits for Che's Deployment to be Available again.
    public var cheReadyTimeout: Duration = .seconds(600)
    public var cheReadyPoll: Duration = .seconds(1)
    /// The leader Lease.
    public var leaseName = "che-backup-controller"
    public var leaseDuration: Duration = .seconds(15)
    public var renewDeadline: Duration?
    public var retryPeriod: Duration?
    /// This replica's name in the Lease.
    public var identity = "\(ProcessInfo.processInfo.hostName)-\(getpid())"
    /// The internal backup server the controller makes when no configuration is named.
    public var internalServer = InternalServerSettings()
    /// The webhook's serving certificate, made and renewed by the leader.
    public var webhookCertificates = WebhookCertificateSettings()
    /// The short-lived agents that reach the users' workspace claims.
    public var workspaces = WorkspaceSettings()
    public init() {}
}

public enum KubernetesMode {
    /// The engine's drivers over the API server, in `client`'s namespace.
    public static func drivers(client: KubeClient, settings: OperatorSettings = .init(), logger: Logger) -> Drivers {
        let namespace = client.namespace
        let store = KubeResourceStore(client: client, namespace: namespace, logger: logger)
        return Drivers(resources: store, secrets: store, agents: PodAgents(client: client, namespace: namespace),
                       token: SecretToken(secrets: store), objects: ClusterObjects(client: client, namespace: namespace, logger: logger),
                       internalServer: ClusterInternalServer(client: client, namespace: namespace, store: store,
                                                             settings: settings.internalServer, logger: logger),
                       che: CheDeployment(client: client, namespace: namespace, readyTimeout: settings.cheReadyTimeout,
                                          pollInterval: settings.cheReadyPoll),
                       workspaces: WorkspaceClaims(client: client, settings: settings.workspaces, logger: logger))
    }
}

/// `chebackup controller --kubernetes`: one replica leads (the Lease `che-backup-controller`);
/// the leader marks what a dead leader left InProgress as Failed, then runs each new
/// CheClusterBackup and CheClusterRestore once, as the watch delivers them.
public struct Operator: Sendable {
    let client: KubeClient
    let pool: BlockingPool
    let logger: Logger
    let settings: OperatorSettings

    public init(client: KubeClient, pool: BlockingPool, logger: Logger, settings: OperatorSettings) {
        self.client = client
        self.pool = pool
        self.logger = logger
        self.settings = settings
    }

    public func run(once: Bool = false) async throws {
        let engine = Engine(drivers: KubernetesMode.drivers(client: client, settings: settings, logger: logger), pool: pool, logger: logger)
        let lease = settings.leaseDuration
        let election = LeaderElection(client: client, name: settings.leaseName, namespace: client.namespace, identity: settings.identity,
                                      leaseDuration: lease, renewDeadline: settings.renewDeadline ?? lease * 2 / 3,
                                      retryPeriod: settings.retryPeriod ?? lease / 7, logger: logger)
        // Credentials, TLS and the CRDs are checked once, up front: such a failure is permanent
        // and must end the command with its reason, not wait for a lease forever.
        _ = try await client.list(.clusterBackups, namespace: client.namespace)
        // A replica that loses the lease (the API server unreachable past the renew deadline,
        // another holder seen) stops its work and waits to lead again, as a new replica would.
        while true {
            logger.notice("controller \(settings.identity) waiting to lead in namespace \(client.namespace) (Lease \(settings.leaseName))")
            do {
                try await election.run {
                    logger.notice("controller \(settings.identity) is the leader")
                    let certificates = WebhookCertificates(client: client, namespace: client.namespace,
                                                           settings: settings.webhookCertificates, logger: logger)
                    try await engine.failInterrupted()
                    if once {
                        if settings.webhookCertificates.enabled { await certificates.ensureLogging() }
                        try await engine.reconcileOnce()
                        return
                    }
                    // The certificate is looked after beside the operations, for as long as this
                    // replica leads; its failures are logged, never end the controller.
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        if settings.webhookCertificates.enabled { group.addTask { await certificates.maintain() } }
                        group.addTask { try await engine.runForever() }
                        defer { group.cancelAll() }
                        _ = try await group.next()
                    }
                }
                return
            } catch let error as KubeError where error.code == .leadershipLost {
                logger.warning("\(error.message); waiting to lead again")
                try await Task.sleep(for: settings.leaseDuration / 3)
            }
        }
    }
}
