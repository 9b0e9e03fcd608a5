import Foundation
import LineProtocol
import Logging
import Repository
import Storage

/// The one engine: it runs CheClusterBackup and CheClusterRestore resources and keeps their
/// status. The `server:*` commands create a resource and run it here; `chebackup controller`
/// runs whatever `apply` created. Only a new resource starts work: one with a state is left alone.
struct Reconciler: Sendable {
    let installation: Installation
    let store: ResourceStore
    let pool: BlockingPool
    let logger: Logger

    init(installation: Installation, pool: BlockingPool, logger: Logger) {
        self.installation = installation
        store = ResourceStore(stateDir: installation.stateDir)
        self.pool = pool
        self.logger = logger
    }

    static func now() -> String { formatTime(Date()) }

    // MARK: servers

    func secret(_ name: String, _ key: String, for what: String) throws -> String {
        guard store.exists(.secret, name) else { throw CLIError("secret \(name) (\(what)) not found") }
        let secret = try store.load(.secret, name, as: Secret.self)
        guard let value = secret.value(key) else { throw CLIError("secret \(name) has no key \"\(key)\" (\(what))") }
        return value
    }

    /// The server a CheBackupServerConfiguration describes, with its secrets.
    func server(fromConfiguration name: String) throws -> BackupServer {
        guard store.exists(.backupServerConfiguration, name) else { throw CLIError("CheBackupServerConfiguration \(name) not found") }
        let config = try store.load(.backupServerConfiguration, name, as: CheBackupServerConfiguration.self)
        let count = [config.spec.rest != nil, config.spec.awss3 != nil, config.spec.sftp != nil].filter { $0 }.count
        guard count == 1 else {
            throw CLIError("CheBackupServerConfiguration \(name) must have exactly one of rest, awss3, sftp (it has \(count))")
        }
        if let rest = config.spec.rest {
            let scheme = rest.protocol ?? "https"
            var secrets = RepositorySecrets(repositoryPassword: try secret(rest.repositoryPasswordSecretRef, "repo-password", for: "repository password"))
            if let credentials = rest.credentialsSecretRef {
                secrets.restUsername = try secret(credentials, "username", for: "REST credentials")
                secrets.restPassword = try secret(credentials, "password", for: "REST credentials")
            }
            let url = "rest:\(scheme)://\(rest.hostname):\(rest.port ?? (scheme == "https" ? 443 : 80))/\(rest.repositoryPath.trimmingCharacters(in: CharacterSet(charactersIn: "/")))"
            return BackupServer(url: url, secrets: secrets, isInternal: name == Self.internalName)
        }
        if let s3 = config.spec.awss3 {
            let scheme = s3.protocol ?? "https"
            var secrets = RepositorySecrets(repositoryPassword: try secret(s3.repositoryPasswordSecretRef, "repo-password", for: "repository password"))
            secrets.awsAccessKeyId = try secret(s3.awsAccessKeySecretRef, "awsAccessKeyId", for: "AWS keys")
            secrets.awsSecretAccessKey = try secret(s3.awsAccessKeySecretRef, "awsSecretAccessKey", for: "AWS keys")
            let url = "s3:\(scheme)://\(s3.hostname ?? "s3.amazonaws.com"):\(s3.port ?? (scheme == "https" ? 443 : 80))/\(s3.repositoryPath.trimmingCharacters(in: CharacterSet(charactersIn: "/")))"
            return BackupServer(url: url, secrets: secrets, isInternal: false)
        }
        let sftp = config.spec.sftp!
        var secrets = RepositorySecrets(repositoryPassword: try secret(sftp.repositoryPasswordSecretRef, "repo-password", for: "repository password"))
        secrets.sshKey = try secret(sftp.sshKeySecretRef, "ssh-privatekey", for: "SSH key")
        let path = sftp.repositoryPath.hasPrefix("/") ? "/" + sftp.repositoryPath : sftp.repositoryPath
        return BackupServer(url: "sftp:\(sftp.username)@\(sftp.hostname):\(sftp.port ?? 22)/\(path)", secrets: secrets, isInternal: false)
    }

    static let internalName = "chebackup-internal"

    /// The internal backup server's configuration and secret, made on first use with a random password.
    func internalServer() throws -> BackupServer {
        if !store.exists(.backupServerConfiguration, Self.internalName) {
            let parts = installation.internalServer.listen.split(separator: ":")
            guard let port = parts.last.flatMap({ Int($0) }) else { throw CLIError("internalServer.listen must be HOST:PORT") }
            let host = parts.dropLast().joined(separator: ":")
            let meta = ObjectMeta(name: Self.internalName, namespace: installation.namespace, creationTimestamp: Self.now())
            try store.save(.secret, Self.internalName, Secret(metadata: meta, stringData: ["repo-password": Primitives.random(32).base64EncodedString()]))
            let rest = RestServerSpec(protocol: "http", hostname: host.isEmpty ? "127.0.0.1" : host, port: port, repositoryPath: "che",
                                      repositoryPasswordSecretRef: Self.internalName)
            try store.save(.backupServerConfiguration, Self.internalName, CheBackupServerConfiguration(metadata: meta, spec: .init(rest: rest)))
        }
        return try server(fromConfiguration: Self.internalName)
    }

    /// Which server an operation uses: the named configuration; the internal server when asked;
    /// else the default server (set by `-r`); else the only configuration there is; else internal.
    func resolve(configRef: String?, useInternal: Bool?) throws -> BackupServer {
        if let configRef { return try server(fromConfiguration: configRef) }
        if useInternal == true { return try internalServer() }
        if let saved = try BackupServer.loadDefault(installation) { return saved }
        let configs = store.names(.backupServerConfiguration).filter { $0 != Self.internalName }
        if configs.count == 1 { return try server(fromConfiguration: configs[0]) }
        return try internalServer()
    }

    // MARK: operations

    /// Runs a new CheClusterBackup; returns its final status.
    func runBackup(_ name: String, onStage: @escaping @Sendable (String) -> Void = { _ in }) async throws -> OperationStatus {
        try await run(CheClusterBackup.self, name, what: "Backup", firstStage: "Setting up", onStage: onStage) { resource, stage in
            let server = try resolve(configRef: resource.spec.backupServerConfigRef, useInternal: resource.spec.useInternalBackupServer)
            let (id, snapshot) = try await withBackupServer(server, stage: stage) { try await $0.backup() }
            return OperationStatus(snapshotId: id.short, cheVersion: snapshot.metadata["cheVersion"])
        }
    }

    /// Runs a new CheClusterRestore; returns its final status.
    func runRestore(_ name: String, confirm: @escaping @Sendable (Snapshot, SnapshotID) throws -> Void = { _, _ in },
                    onStage: @escaping @Sendable (String) -> Void = { _ in }) async throws -> OperationStatus {
        try await run(CheClusterRestore.self, name, what: "Restore", firstStage: "Downloading", onStage: onStage) { resource, stage in
            let server = try resolve(configRef: resource.spec.backupServerConfigRef, useInternal: nil)
            let snapshot = (resource.spec.snapshotId ?? "").isEmpty ? "latest" : resource.spec.snapshotId!
            let (id, _) = try await withBackupServer(server, stage: stage) { try await $0.restore(snapshot: snapshot, relocate: resource.spec.relocate ?? false, confirm: confirm) }
            return OperationStatus(snapshotId: id.short)
        }
    }

    /// The life of an operation resource: InProgress with each stage saved as it starts, then
    /// Succeeded with start and finish times, or Failed with `Error: …`. One that has a state
    /// already is left alone (only creating starts work).
    func run<R: OperationResource>(_ type: R.Type, _ name: String, what: String, firstStage: String,
                                   onStage: @escaping @Sendable (String) -> Void,
                                   work: (R, @escaping @Sendable (String) -> Void) async throws -> OperationStatus) async throws -> OperationStatus {
        var resource = try store.load(R.kind, name, as: R.self)
        if let status = resource.status, status.state != nil { return status }
        let started = Self.now()
        let status = Locked(OperationStatus(state: "InProgress", stage: firstStage, message: "\(what) started at \(started)"))
        let original = resource
        let persist: @Sendable (OperationStatus) -> Void = { s in
            var r = original
            r.status = s
            try? store.save(R.kind, name, r)
        }
        persist(status.value)
        let stage: @Sendable (String) -> Void = { text in
            onStage(text)
            persist(status.withLock { $0.stage = text; return $0 })
        }
        do {
            var result = try await work(resource, stage)
            result.state = "Succeeded"
            result.stage = "Done"
            result.message = "\(what)\(result.snapshotId.map { " of " + $0 } ?? "") started at \(started), finished at \(Self.now())"
            resource.status = result
        } catch {
            resource.status = OperationStatus(state: "Failed", stage: status.value.stage, message: "Error: \(describe(error))")
        }
        try store.save(R.kind, name, resource)
        return resource.status!
    }

    func withBackupServer<T: Sendable>(_ server: BackupServer, stage: @escaping @Sendable (String) -> Void,
                                       _ body: (Orchestrator) async throws -> T) async throws -> T {
        var process: InternalServerProcess?
        if server.isInternal {
            stage("Setting up the internal backup server on \(installation.internalServer.listen)")
            process = try InternalServerProcess(installation: installation)
        }
        defer { process?.stop() }
        let token = try SharedToken.load(file: installation.tokenFile)
        return try await body(Orchestrator(installation: installation, server: server, token: token, pool: pool, logger: logger, stage: stage))
    }

    /// Operations a previous controller left InProgress are marked Failed, saying what happened:
    /// never InProgress forever, never a half-restored installation reported as Succeeded.
    func failInterrupted() throws {
        try failInterrupted(CheClusterBackup.self, "no snapshot was written. Create a new CheClusterBackup.")
        try failInterrupted(CheClusterRestore.self, "the installation may be partly restored. Create a new CheClusterRestore.")
    }

    private func failInterrupted<R: OperationResource>(_ type: R.Type, _ consequence: String) throws {
        for name in store.names(R.kind) {
            var r = try store.load(R.kind, name, as: R.self)
            if var status = r.status, status.state == "InProgress" {
                status.state = "Failed"
                status.message = "Error: the controller stopped during \"\(status.stage ?? "?")\"; \(consequence)"
                r.status = status
                try store.save(R.kind, name, r)
            }
        }
    }

    /// One pass: runs every new backup and restore.
    func reconcileOnce() async throws {
        for name in store.names(.backup) where (try? store.load(.backup, name, as: CheClusterBackup.self))?.status?.state == nil {
            let s = try await runBackup(name)
            logger.notice("CheClusterBackup \(name): \(s.state ?? "") \(s.message ?? "")")
        }
        for name in store.names(.restore) where (try? store.load(.restore, name, as: CheClusterRestore.self))?.status?.state == nil {
            let s = try await runRestore(name)
            logger.notice("CheClusterRestore \(name): \(s.state ?? "") \(s.message ?? "")")
        }
    }
}

func describe(_ error: any Error) -> String {
    switch error {
    case let e as RepositoryError: e.message
    case let e as StorageError: e.description
    case let e as CLIError: e.description
    default: "\(error)"
    }
}
