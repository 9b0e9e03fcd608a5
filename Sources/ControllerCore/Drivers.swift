import AgentClient
import Foundation
import LineProtocol
import Repository

/// Where a mode keeps the resources: files in local mode, the API server in a cluster.
public protocol ResourceStore: Sendable {
    func get<R: CheResource>(_ type: R.Type, _ name: String) async throws -> R?
    /// Every resource of a kind that can be read; one that cannot is reported through the
    /// store's logger and skipped (it must not stop the others).
    func list<R: CheResource>(_ type: R.Type) async throws -> [R]
    /// Creates the resource; replaces it when `replace` (never used for operations).
    func create<R: CheResource>(_ resource: R, replace: Bool) async throws
    /// False when it was not there.
    func delete<R: CheResource>(_ type: R.Type, _ name: String) async throws -> Bool
    /// Writes only the status (Kubernetes: the `/status` subresource with the object's
    /// resourceVersion, a conflict re-read and retried); failures are thrown, never swallowed.
    func updateStatus<R: StatusResource>(_ type: R.Type, _ name: String, _ status: R.Status) async throws
    /// Every resource of the kind now, then each one created or changed later, each once per
    /// version; ends when the consumer stops.
    func changes<R: CheResource>(_ type: R.Type) -> AsyncThrowingStream<R, any Error>
    /// A note on the resource's history (a core/v1 Event in a cluster; the log in local mode).
    func record<R: CheResource>(_ resource: R, reason: String, message: String, warning: Bool) async
}

/// Secrets by name (a Secret file in local mode, a core/v1 Secret in a cluster).
public protocol SecretStore: Sendable {
    func secret(_ name: String) async throws -> Secret?
    func save(_ secret: Secret) async throws
}

/// An agent the engine can reach.
public struct AgentRef: Sendable {
    public var role: String
    public var endpoint: AgentEndpoint
    /// The token this agent holds, when it is not the installation's (a one-time token of a
    /// short-lived workspace agent).
    public var token: SharedToken?
    public init(role: String, endpoint: AgentEndpoint, token: SharedToken? = nil) {
        self.role = role
        self.endpoint = endpoint
        self.token = token
    }
}

/// The agents of the installation: listed in the configuration file, or the Ready pods labelled
/// `chebackup.eclipse.org/agent`. Throws (naming the role) when a role the mode needs has none.
public protocol AgentDirectory: Sendable {
    func agents() async throws -> [AgentRef]
}

/// The shared token the agents hold.
public protocol AgentTokenSource: Sendable {
    func token() async throws -> SharedToken
}

/// What a snapshot records about the installation, and what a restore compares with.
public struct InstallationInfo: Sendable, Equatable {
    public var id: String
    public var namespace: String
    public var domain: String
    public var cheVersion: String
    public init(id: String, namespace: String, domain: String, cheVersion: String) {
        self.id = id
        self.namespace = namespace
        self.domain = domain
        self.cheVersion = cheVersion
    }
}

/// The installation's own objects (CheCluster, Che's Secrets and ConfigMaps), backed up by the
/// controller itself as the part `che/objects`: a tree of one YAML or JSON file per object.
public protocol InstallationObjects: Sendable {
    func info() async throws -> InstallationInfo
    /// Stores the objects as the part `name`.
    func backup(into repository: Repository, part name: String, options: BackupOptions) async throws -> (parts: [Part], parent: SnapshotID?)
    /// Replaces the installation's objects with those of the part, rewritten by `relocation`.
    func restore(_ part: Part, from repository: Repository, relocation: Relocation, stage: @escaping @Sendable (String) -> Void) async throws
}

/// The internal backup server: its configuration and secret made on first use (random repository
/// password), and the server running while an operation needs it.
public protocol InternalServerHost: Sendable {
    /// The configuration's name; created with its Secret when missing, never replaced.
    func ensureConfiguration() async throws -> String
    func withRunning<T: Sendable>(stage: @escaping @Sendable (String) -> Void, _ body: () async throws -> T) async throws -> T
}

/// A DevWorkspace claim (PersistentVolumeClaim) in a user's namespace, backed up as the part
/// `workspaces/<namespace>/<name>`.
public struct WorkspaceClaim: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var namespace: String
    public var name: String
    public init(namespace: String, name: String) {
        self.namespace = namespace
        self.name = name
    }
    public static let partPrefix = "workspaces/"
    public var part: String { Self.partPrefix + "\(namespace)/\(name)" }
    public var description: String { "\(namespace)/\(name)" }
    /// The claim a part name stands for.
    public init?(part: String) {
        guard part.hasPrefix(Self.partPrefix) else { return nil }
        let rest = part.dropFirst(Self.partPrefix.count).split(separator: "/", omittingEmptySubsequences: false)
        guard rest.count == 2, !rest[0].isEmpty, !rest[1].isEmpty else { return nil }
        self.init(namespace: String(rest[0]), name: String(rest[1]))
    }
    public static func < (a: Self, b: Self) -> Bool { (a.namespace, a.name) < (b.namespace, b.name) }
}

/// The users' workspace volumes (Kubernetes mode): each claim is reached through a short-lived
/// files agent that mounts it, made for one backup or restore and removed afterwards.
public protocol WorkspaceVolumes: Sendable {
    /// How many claims are backed up or restored at once.
    var parallelism: Int { get }
    /// Every workspace claim in the users' namespaces.
    func claims() async throws -> [WorkspaceClaim]
    /// Stores what recreates the claims and their namespaces as the part `name`.
    func backupRecords(of claims: [WorkspaceClaim], into repository: Repository, part name: String, options: BackupOptions) async throws -> [Part]
    /// The records of that part, by claim.
    func records(_ part: Part, from repository: Repository) async throws -> [WorkspaceClaim: Data]
    /// Makes the claim ready to be restored into (recreating it, and its namespace, from its
    /// record when missing); returns why it must be skipped instead (it is in use).
    func prepareRestore(_ claim: WorkspaceClaim, record: Data?) async throws -> String?
    /// Runs `body` with an agent serving the claim (mounted read-only for a backup), removed afterwards.
    func withAgent<T: Sendable>(for claim: WorkspaceClaim, readOnly: Bool, stage: @escaping @Sendable (String) -> Void,
                                _ body: @escaping @Sendable (AgentRef) async throws -> T) async throws -> T
}

/// Che's server, stopped while its databases are restored and started afterwards.
public protocol CheServer: Sendable {
    /// Stops Che; returns what `start` needs to bring it back as it was.
    func stop(stage: @escaping @Sendable (String) -> Void) async throws -> CheServerState
    func start(_ state: CheServerState, stage: @escaping @Sendable (String) -> Void) async throws
}

public struct CheServerState: Sendable {
    public var replicas: [String: Int]
    public init(replicas: [String: Int] = [:]) { self.replicas = replicas }
}

/// Everything a mode supplies to the engine.
public struct Drivers: Sendable {
    public var resources: any ResourceStore
    public var secrets: any SecretStore
    public var agents: any AgentDirectory
    public var token: any AgentTokenSource
    public var objects: any InstallationObjects
    public var internalServer: any InternalServerHost
    public var che: any CheServer
    /// The server used when an operation names none (local mode: the last `-r`).
    public var defaultServer: @Sendable () async throws -> BackupServer?
    /// The users' workspace claims; nil where there are none to reach (local mode).
    public var workspaces: (any WorkspaceVolumes)?

    public init(resources: any ResourceStore, secrets: any SecretStore, agents: any AgentDirectory, token: any AgentTokenSource,
                objects: any InstallationObjects, internalServer: any InternalServerHost, che: any CheServer,
                defaultServer: @escaping @Sendable () async throws -> BackupServer? = { nil }, workspaces: (any WorkspaceVolumes)? = nil) {
        self.resources = resources
        self.secrets = secrets
        self.agents = agents
        self.token = token
        self.objects = objects
        self.internalServer = internalServer
        self.che = che
        self.defaultServer = defaultServer
        self.workspaces = workspaces
    }
}
