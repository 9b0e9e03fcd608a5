import ArgumentParser
import Foundation
import LineProtocol
import Logging
import Repository
import Storage

/// chectl's server flags, shared by server:backup, server:restore and snapshots.
struct ServerOptions: ParsableArguments {
    @Option(help: "The installation's configuration file (default: $CHEBACKUP_CONFIG or ./chebackup.yaml).") var config: String?
    @Option(name: [.customShort("r"), .customLong("repository-url")], help: "Backup server repository URL; becomes the default.") var repositoryURL: String?
    @Option(name: [.customShort("p"), .customLong("repository-password")], help: "Repository password (or BACKUP_REPOSITORY_PASSWORD).") var repositoryPassword: String?
    @Option(help: "REST server user name (or REST_SERVER_USERNAME).") var username: String?
    @Option(help: "REST server password (or REST_SERVER_PASSWORD).") var password: String?
    @Option(help: "AWS access key id (or AWS_ACCESS_KEY_ID).") var awsAccessKeyId: String?
    @Option(help: "AWS secret access key (or AWS_SECRET_ACCESS_KEY).") var awsSecretAccessKey: String?
    @Option(help: "SSH private key (or SSH_KEY).") var sshKey: String?
    @Option(help: "SSH private key file (or SSH_KEY_FILE).") var sshKeyFile: String?
    @Option(help: "A CheBackupServerConfiguration to use (not with -r/-p).") var backupServerConfigName: String?
    @Option(name: [.customShort("n"), .customLong("chenamespace")], help: "Che's namespace (checked against the configuration).") var chenamespace: String?
    @Flag(name: .shortAndLong, help: "Log more.") var verbose = false

    func validate() throws {
        if backupServerConfigName != nil && (repositoryURL != nil || repositoryPassword != nil) {
            throw ValidationError("--backup-server-config-name cannot be used together with -r/--repository-url or -p/--repository-password")
        }
        if repositoryPassword != nil && repositoryURL == nil {
            throw ValidationError("-p/--repository-password needs -r/--repository-url")
        }
    }

    var logger: Logger {
        var logger = Logger(label: "chebackup") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = verbose ? .debug : .warning
        return logger
    }

    /// The installation and the engine, with a server given by flags saved as the default.
    func engine(pool: BlockingPool, say: (String) -> Void) throws -> (Installation, Reconciler) {
        let installation = try installation()
        _ = try flagServer(installation, say: say)
        return (installation, Reconciler(installation: installation, pool: pool, logger: logger))
    }

    func installation() throws -> Installation {
        let path = config ?? ProcessInfo.processInfo.environment["CHEBACKUP_CONFIG"] ?? "chebackup.yaml"
        let installation = try Installation.load(path)
        if let chenamespace, chenamespace != installation.namespace {
            throw CLIError("namespace \(chenamespace) is not the configured installation's (\(installation.namespace))")
        }
        return installation
    }

    /// With -r: that server, saved as the default for later commands. Without: nil (the engine
    /// resolves a configuration, the default or the internal server).
    func flagServer(_ installation: Installation, say: (String) -> Void) throws -> BackupServer? {
        let env = ProcessInfo.processInfo.environment
        if let url = repositoryURL {
            guard let pw = repositoryPassword ?? env["BACKUP_REPOSITORY_PASSWORD"] else {
                throw CLIError("a repository password is needed with -r: -p or BACKUP_REPOSITORY_PASSWORD")
            }
            let parsed: RepositoryURL
            do { parsed = try RepositoryURL.parse(url) } catch let e as RepositoryURL.ParseError {
                throw CLIError("invalid repository URL: \(e.description)")
            }
            var secrets = RepositorySecrets(repositoryPassword: pw)
            var cleanURL = parsed.description
            if case .rest(var location) = parsed {
                secrets.restUsername = username ?? location.username ?? env["REST_SERVER_USERNAME"]
                secrets.restPassword = password ?? location.password ?? env["REST_SERVER_PASSWORD"]
                location.username = nil
                location.password = nil
                cleanURL = RepositoryURL.rest(location).description
            }
            if case .s3 = parsed {
                secrets.awsAccessKeyId = awsAccessKeyId ?? env["AWS_ACCESS_KEY_ID"]
                secrets.awsSecretAccessKey = awsSecretAccessKey ?? env["AWS_SECRET_ACCESS_KEY"]
                secrets.awsRegion = env["AWS_DEFAULT_REGION"]
                guard secrets.awsAccessKeyId != nil, secrets.awsSecretAccessKey != nil else {
                    throw CLIError("S3 needs --aws-access-key-id and --aws-secret-access-key (or the AWS variables)")
                }
            }
            if case .sftp = parsed {
                let keyFile = sshKeyFile ?? env["SSH_KEY_FILE"]
                secrets.sshKey = try sshKey ?? env["SSH_KEY"] ?? keyFile.map {
                    guard let text = try? String(contentsOfFile: $0, encoding: .utf8) else { throw CLIError("cannot read the SSH key file \($0)") }
                    return text
                }
                secrets.sshHostFingerprint = env["SSH_HOST_FINGERPRINT"]
                if let known = env["SSH_KNOWN_HOSTS"] { secrets.sshKnownHosts = try? String(contentsOfFile: known, encoding: .utf8) }
            }
            let server = BackupServer(url: cleanURL, secrets: secrets, isInternal: false)
            try server.saveAsDefault(installation)
            say("Using backup server \(cleanURL) (now the default)")
            return server
        }
        if let name = backupServerConfigName,
           !ResourceStore(stateDir: installation.stateDir).exists(.backupServerConfiguration, name) {
            throw CLIError("CheBackupServerConfiguration \(name) not found (create it with chebackup apply -f)")
        }
        return nil
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
            let (installation, reconciler) = try server.engine(pool: pool) { say($0) }
            let name = "backup-" + operationSuffix()
            try reconciler.store.save(.backup, name, CheClusterBackup(
                metadata: ObjectMeta(name: name, namespace: installation.namespace, creationTimestamp: Reconciler.now()),
                spec: .init(backupServerConfigRef: server.backupServerConfigName)))
            let status = try await reconciler.runBackup(name) { say($0) }
            guard status.state == "Succeeded", let id = status.snapshotId else {
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

    func run() async throws {
        try await runReportingErrors { pool in
            let say = StagePrinter()
            let (installation, reconciler) = try server.engine(pool: pool) { say($0) }
            let name = "restore-" + operationSuffix()
            try reconciler.store.save(.restore, name, CheClusterRestore(
                metadata: ObjectMeta(name: name, namespace: installation.namespace, creationTimestamp: Reconciler.now()),
                spec: .init(snapshotId: snapshotId, backupServerConfigRef: server.backupServerConfigName, relocate: relocate)))
            let batch = self.batch
            let status = try await reconciler.runRestore(name, confirm: { snapshot, id in
                printOut("Snapshot \(id.short) of \(formatTime(snapshot.time)), Che \(snapshot.metadata["cheVersion"] ?? "?"), namespace \(snapshot.metadata["namespace"] ?? "?"):")
                for part in snapshot.parts { printOut("  \(part.name)  \(Format.bytes(part.stats.bytes))") }
                if batch { return }
                printOut("This replaces the installation's databases, data and objects. Continue? [y/N] ")
                guard let answer = readLine(), ["y", "yes"].contains(answer.lowercased()) else {
                    throw CLIError("restore cancelled: nothing was changed")
                }
            }, onStage: { say($0) })
            guard status.state == "Succeeded" else {
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
    }

    func run() async throws {
        try await runReportingErrors { pool in
            let (_, reconciler) = try server.engine(pool: pool) { _ in }
            let backupServer = try reconciler.resolve(configRef: server.backupServerConfigName, useInternal: nil)
            let all = try await reconciler.withBackupServer(backupServer, stage: { _ in }) { orchestrator in
                try await orchestrator.openRepository(create: false).listSnapshots()
            }
            if json {
                printOut(Format.json(all.map { id, s in
                    Row(id: id.hex, time: s.time, parts: Dictionary(s.parts.map { ($0.name, $0.stats.bytes) }, uniquingKeysWith: { a, _ in a }),
                        bytes: s.totalBytes, cheVersion: s.metadata["cheVersion"], namespace: s.metadata["namespace"])
                }))
                return
            }
            printOut("ID        Time                      Size        Che        Namespace       Parts")
            for (id, s) in all {
                printOut("\(id.short)  \(formatTime(s.time).prefix(24).padding(toLength: 24, withPad: " ", startingAt: 0))  \(Format.bytes(s.totalBytes).padding(toLength: 10, withPad: " ", startingAt: 0))  \((s.metadata["cheVersion"] ?? "-").padding(toLength: 9, withPad: " ", startingAt: 0))  \((s.metadata["namespace"] ?? "-").padding(toLength: 14, withPad: " ", startingAt: 0))  \(s.parts.map(\.name).joined(separator: ", "))")
            }
            printOut("\(all.count) snapshots")
        }
    }
}
