import ArgumentParser
import ControllerCore
import Foundation
import Kubernetes
import KubernetesAPI
import LineProtocol
import LocalMode
import Logging
import Repository
import Storage

/// Where the resources live: a cluster (`--kubernetes`, `--kubeconfig`, or running in a pod) or
/// the local configuration file.
struct ModeOptions: ParsableArguments {
    @Option(help: "The installation's configuration file, local mode (default: $CHEBACKUP_CONFIG or ./chebackup.yaml).") var config: String?
    @Flag(help: "Work against a Kubernetes cluster (chosen anyway with --kubeconfig or inside a pod).") var kubernetes = false
    @Option(help: "The kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).") var kubeconfig: String?
    @Option(help: "The kubeconfig context (default: its current context).") var context: String?

    var inCluster: Bool { kubernetes || kubeconfig != nil || (config == nil && KubeConfig.runningInCluster) }

    func installation(namespace: String? = nil) throws -> Installation {
        let installation = try Installation.load(option: config)
        if let namespace, namespace != installation.namespace {
            throw CLIError("namespace \(namespace) is not the configured installation's (\(installation.namespace))")
        }
        return installation
    }

    func cluster(namespace: String?, logger: Logger) throws -> KubeClient {
        var config = try KubeConfig.automatic(kubeconfig: kubeconfig, context: context, environment: ProcessInfo.processInfo.environment)
        if let namespace { config.namespace = namespace }
        return KubeClient(config: config, logger: logger)
    }
}

/// chectl's server flags, shared by server:backup, server:restore and snapshots.
struct ServerOptions: ParsableArguments {
    @OptionGroup var mode: ModeOptions
    @Option(name: [.customShort("r"), .customLong("repository-url")], help: "Backup server repository URL; becomes the default.") var repositoryURL: String?
    @Option(name: [.customShort("p"), .customLong("repository-password")], help: "Repository password (or BACKUP_REPOSITORY_PASSWORD).") var repositoryPassword: String?
    @Option(help: "REST server user name (or REST_SERVER_USERNAME).") var username: String?
    @Option(help: "REST server password (or REST_SERVER_PASSWORD).") var password: String?
    @Option(help: "AWS access key id (or AWS_ACCESS_KEY_ID).") var awsAccessKeyId: String?
    @Option(help: "AWS secret access key (or AWS_SECRET_ACCESS_KEY).") var awsSecretAccessKey: String?
    @Option(help: "SSH private key (or SSH_KEY).") var sshKey: String?
    @Option(help: "SSH private key file (or SSH_KEY_FILE).") var sshKeyFile: String?
    @Option(help: "A CheBackupServerConfiguration to use (not with -r/-p).") var backupServerConfigName: String?
    @Option(name: [.customShort("n"), .customLong("chenamespace")], help: "Che's namespace (local mode: checked against the configuration; cluster: where the resources go).") var chenamespace: String?
    @Option(help: "Cluster: give up following the operation after this many minutes.") var timeout = 60
    @Flag(name: .shortAndLong, help: "Log more.") var verbose = false

    func validate() throws {
        if backupServerConfigName != nil && (repositoryURL != nil || repositoryPassword != nil) {
            throw ValidationError("--backup-server-config-name cannot be used together with -r/--repository-url or -p/--repository-password")
        }
        if repositoryPassword != nil && repositoryURL == nil {
            throw ValidationError("-p/--repository-password needs -r/--repository-url")
        }
    }

    var logger: Logger { makeLogger(verbose ? .debug : .warning) }

    /// Local mode: the installation and the engine. A server given by flags becomes the default
    /// only once it was reached and its repository opened (created, for a backup, when the
    /// location is empty): a wrong URL or password never replaces a default that works.
    func localEngine(pool: BlockingPool, createRepository: Bool, say: @escaping @Sendable (String) -> Void) async throws
        -> (Installation, Engine, FileResourceStore) {
        let installation = try mode.installation(namespace: chenamespace)
        let drivers = LocalMode.drivers(installation, logger: logger)
        let store = FileResourceStore(stateDir: installation.stateDir, logger: logger)
        let engine = Engine(drivers: drivers, pool: pool, logger: logger)
        if let server = try flagServer() {
            _ = try await engine.withJob(server, stage: say) { try await $0.openRepository(create: createRepository) }
            try LocalMode.saveDefaultServer(server, installation, logger: logger)
            say("Using backup server \(server.url) (now the default)")
        } else if let name = backupServerConfigName, !store.exists(.backupServerConfiguration, name) {
            throw CLIError("CheBackupServerConfiguration \(name) not found (create it with chebackup apply -f)")
        }
        return (installation, engine, store)
    }

    /// With -r: that server and its secrets from the flags and the usual variables. Without: nil.
    func flagServer() throws -> BackupServer? {
        let env = ProcessInfo.processInfo.environment
        guard let url = repositoryURL else { return nil }
        guard let pw = repositoryPassword ?? env["BACKUP_REPOSITORY_PASSWORD"] else {
            throw CLIError("a repository password is needed with -r: -p or BACKUP_REPOSITORY_PASSWORD")
        }
        let parsed: RepositoryURL
        do { parsed = try RepositoryURL.parse(url) } catch let e as RepositoryURL.ParseError {
            throw CLIError("invalid repository URL: \(e.description)")
        }
        var secrets = RepositorySecrets(repositoryPassword: pw)
        var cleanURL = parsed.description
        switch parsed {
        case .rest(var location):
            secrets.restUsername = username ?? location.username ?? env["REST_SERVER_USERNAME"]
            secrets.restPassword = password ?? location.password ?? env["REST_SERVER_PASSWORD"]
            location.username = nil
            location.password = nil
            cleanURL = RepositoryURL.rest(location).description
        case .s3:
            secrets.awsAccessKeyId = awsAccessKeyId ?? env["AWS_ACCESS_KEY_ID"]
            secrets.awsSecretAccessKey = awsSecretAccessKey ?? env["AWS_SECRET_ACCESS_KEY"]
            secrets.awsRegion = env["AWS_DEFAULT_REGION"]
            guard secrets.awsAccessKeyId != nil, secrets.awsSecretAccessKey != nil else {
                throw CLIError("S3 needs --aws-access-key-id and --aws-secret-access-key (or the AWS variables)")
            }
        case .sftp:
            let keyFile = sshKeyFile ?? env["SSH_KEY_FILE"]
            secrets.sshKey = try sshKey ?? env["SSH_KEY"] ?? keyFile.map {
                guard let text = try? String(contentsOfFile: $0, encoding: .utf8) else { throw CLIError("cannot read the SSH key file \($0)") }
                return text
            }
            secrets.sshHostFingerprint = env["SSH_HOST_FINGERPRINT"]
            if let known = env["SSH_KNOWN_HOSTS"] { secrets.sshKnownHosts = try? String(contentsOfFile: known, encoding: .utf8) }
        case .local:
            break
        }
        return BackupServer(url: cleanURL, secrets: secrets, isInternal: false)
    }

    /// Cluster mode: chectl's way, the resources created in the cluster and their status followed.
    func cluster(say: @escaping @Sendable (String) -> Void) throws -> ClusterOperations {
        let client = try mode.cluster(namespace: chenamespace, logger: logger)
        return ClusterOperations(client: client, logger: logger, say: say)
    }
}

/// Prints stages with their start time.
struct StagePrinter: Sendable {
    let started = Date()
    func callAsFunction(_ text: String) {
        printOut(String(format: "[%6.2fs] ", Date().timeIntervalSince(started)) + text)
    }
}

struct ServerBackup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "server:backup", abstract: "Back up the Che installation.")
    @OptionGroup var server: ServerOptions
    @Flag(help: "Do not ask anything.") var batch = false

    func run() async throws {
        try await runReportingErrors { pool in
            let say = StagePrinter()
            if server.mode.inCluster {
                let cluster = try server.cluster { say($0) }
                let configName = try await cluster.configure(server.flagServer(), configName: server.backupServerConfigName)
                let status = try await cluster.backup(configName: configName, timeout: .seconds(server.timeout * 60))
                printOut("Backup snapshot ID: \(status.snapshotId ?? "?")")
                return
            }
            let (installation, engine, store) = try await server.localEngine(pool: pool, createRepository: true) { say($0) }
            let name = "backup-" + operationSuffix()
            try store.write(CheClusterBackup(
                metadata: ObjectMeta(name: name, namespace: installation.namespace, creationTimestamp: Engine.now()),
                spec: .init(backupServerConfigRef: server.backupServerConfigName)))
            let status = try await engine.runBackup(name) { say($0) }
            guard status.state == .succeeded, let id = status.snapshotId else {
                throw CLIError(String((status.message ?? "backup failed").trimmingPrefix("Error: ")) + " (CheClusterBackup \(name): Failed)")
            }
            say(status.message ?? "")
            printOut("Backup snapshot ID: \(id)")
        }
    }
}

struct ServerRestore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "server:restore", abstract: "Restore the Che installation from a snapshot.")
    @OptionGroup var server: ServerOptions
    @Option(name: [.customShort("s"), .customLong("snapshot-id")], help: "Snapshot id (any unique prefix) or latest.") var snapshotId = "latest"
    @Flag(help: "Do not ask for confirmation.") var batch = false
    @Flag(help: "Restore a snapshot of another namespace or domain, rewriting them in the objects and database rows.") var relocate = false
    @Flag(help: "Roll back: restore the latest backup made before an update of Che (tagged backup-before-update).") var rollback = false

    func validate() throws {
        if rollback && snapshotId != "latest" { throw ValidationError("--rollback picks the snapshot itself: leave out --snapshot-id") }
    }

    func run() async throws {
        try await runReportingErrors { pool in
            let say = StagePrinter()
            if server.mode.inCluster {
                if !batch {
                    printOut("This replaces the installation's databases, data and objects in the cluster. Continue? [y/N] ")
                    guard let answer = readLine(), ["y", "yes"].contains(answer.lowercased()) else {
                        throw CLIError("restore cancelled: nothing was changed")
                    }
                }
                let cluster = try server.cluster { say($0) }
                let configName = try await cluster.configure(server.flagServer(), configName: server.backupServerConfigName)
                let status = try await cluster.restore(configName: configName, snapshotId: snapshotId == "latest" ? nil : snapshotId,
                                                       relocate: relocate, rollback: rollback, timeout: .seconds(server.timeout * 60))
                say(status.message ?? "")
                return
            }
            let (installation, engine, store) = try await server.localEngine(pool: pool, createRepository: false) { say($0) }
            let name = "restore-" + operationSuffix()
            try store.write(CheClusterRestore(
                metadata: ObjectMeta(name: name, namespace: installation.namespace, creationTimestamp: Engine.now()),
                spec: .init(snapshotId: rollback ? nil : snapshotId, backupServerConfigRef: server.backupServerConfigName, relocate: relocate,
                            rollback: rollback ? true : nil)))
            let batch = self.batch
            let status = try await engine.runRestore(name, confirm: { snapshot, id in
                printOut("Snapshot \(id.short) of \(formatTime(snapshot.time)), Che \(snapshot.metadata["cheVersion"] ?? "?"), namespace \(snapshot.metadata["namespace"] ?? "?"):")
                for part in snapshot.parts { printOut("  \(part.name)  \(Format.bytes(part.stats.bytes))") }
                if batch { return }
                printOut("This replaces the installation's databases, data and objects. Continue? [y/N] ")
                guard let answer = readLine(), ["y", "yes"].contains(answer.lowercased()) else {
                    throw CLIError("restore cancelled: nothing was changed")
                }
            }, onStage: { say($0) })
            guard status.state == .succeeded else {
                throw CLIError(String((status.message ?? "restore failed").trimmingPrefix("Error: ")) + " (CheClusterRestore \(name): Failed)")
            }
            say(status.message ?? "")
        }
    }
}

/// A name suffix for the resources the server:* commands create.
func operationSuffix() -> String {
    let f = DateFormatter()
    f.locale = Locale(identifier: "en_US_POSIX")
    f.timeZone = TimeZone(identifier: "UTC")
    f.dateFormat = "yyyyMMdd-HHmmss"
    return f.string(from: Date()) + "-" + String(UInt32.random(in: 0...0xffff), radix: 16)
}

struct CheSnapshots: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "snapshots", abstract: "List the snapshots on the default backup server.")
    @OptionGroup var server: ServerOptions
    @Flag(help: "Print JSON.") var json = false

    struct Row: Encodable {
        let id: String
        let time: Date
        let parts: [String: Int64]
        let bytes: Int64
        let cheVersion: String?
        let namespace: String?
        let tags: [String]
    }

    func run() async throws {
        try await runReportingErrors { pool in
            let engine: Engine
            if server.mode.inCluster {
                let cluster = try server.cluster { _ in }
                engine = Engine(drivers: cluster.drivers(), pool: pool, logger: server.logger)
            } else {
                engine = try await server.localEngine(pool: pool, createRepository: false) { _ in }.1
            }
            let backupServer = try await engine.resolve(configRef: server.backupServerConfigName, useInternal: nil)
            let all = try await engine.withJob(backupServer, stage: { _ in }) { job in
                try await job.openRepository(create: false).listSnapshots()
            }
            if json {
                printOut(Format.json(all.map { id, s in
                    Row(id: id.hex, time: s.time, parts: Dictionary(s.parts.map { ($0.name, $0.stats.bytes) }, uniquingKeysWith: { a, _ in a }),
                        bytes: s.totalBytes, cheVersion: s.metadata["cheVersion"], namespace: s.metadata["namespace"], tags: s.tags)
                }))
                return
            }
            func pad(_ s: String, _ n: Int) -> String { s.padding(toLength: n, withPad: " ", startingAt: 0) }
            printOut("ID        Time                      Size        Che        Namespace       Parts")
            for (id, s) in all {
                printOut("\(id.short)  \(pad(String(formatTime(s.time).prefix(24)), 24))  \(pad(Format.bytes(s.totalBytes), 10))  \(pad(s.metadata["cheVersion"] ?? "-", 9))  \(pad(s.metadata["namespace"] ?? "-", 14))  \(s.parts.map(\.name).joined(separator: ", "))")
            }
            printOut("\(all.count) snapshots")
        }
    }
}
