import ArgumentParser
import ControllerCore
import Foundation
import Kubernetes
import KubernetesAPI
import LocalMode
import Logging
import Storage
import Yams

/// Options for the resource commands: the installation file and logging.
struct ResourceOptions: ParsableArguments {
    @Option(help: "The installation's configuration file (default: $CHEBACKUP_CONFIG or ./chebackup.yaml).") var config: String?
    @Flag(name: .shortAndLong, help: "Log more.") var verbose = false

    func installation() throws -> Installation {
        try Installation.load(option: config)
    }

    var logger: Logger { makeLogger(verbose ? .info : .notice) }

    func store() throws -> FileResourceStore { FileResourceStore(stateDir: try installation().stateDir, logger: logger) }
}

struct Apply: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create or update resources from a YAML file (several documents allowed).")
    @OptionGroup var options: ResourceOptions
    @Option(name: .shortAndLong, help: "The YAML file.") var file: String

    struct Header: Decodable {
        let kind: String
        let metadata: ObjectMeta
    }

    func run() async throws {
        try await runReportingErrors { _ in
            let store = try options.store()
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { throw CLIError("cannot read \(file)") }
            let nodes: [Node]
            do { nodes = Array(try Yams.compose_all(yaml: text)) } catch { throw CLIError("\(file) is not valid YAML: \(error)") }
            for node in nodes {
                let header: Header
                do { header = try YAMLDecoder().decode(Header.self, from: node) } catch {
                    throw CLIError("\(file): a document without kind or metadata.name")
                }
                guard let kind = ResourceKind(loose: header.kind), kind.rawValue == header.kind else {
                    throw CLIError("\(file): unknown kind \(header.kind)")
                }
                let name = header.metadata.name
                guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." }) else {
                    throw CLIError("\(file): invalid name \"\(name)\"")
                }
                func decode<T: Decodable>(_ type: T.Type) throws -> T {
                    do { return try YAMLDecoder().decode(T.self, from: node) } catch {
                        throw CLIError("\(header.kind) \(name): \(Installation.describe(error))")
                    }
                }
                switch kind {
                case .secret:
                    try store.write(try decode(Secret.self))
                    printOut("secret/\(name) configured")
                case .backupServerConfiguration:
                    let config = try decode(CheBackupServerConfiguration.self)
                    try config.validate()
                    try store.write(config)
                    printOut("chebackupserverconfiguration/\(name) configured")
                case .backup:
                    if store.exists(kind, name) {
                        printOut("checlusterbackup/\(name) unchanged (editing a backup has no effect: create a new one)")
                        continue
                    }
                    var resource = try decode(CheClusterBackup.self)
                    resource.status = nil
                    try resource.validate()
                    try store.write(resource)
                    printOut("checlusterbackup/\(name) created")
                case .schedule:
                    // A schedule may be edited: its spec changes, its status stays.
                    var resource = try decode(CheClusterBackupSchedule.self)
                    try resource.validate()
                    let existing = store.exists(kind, name) ? try store.load(CheClusterBackupSchedule.self, name) : nil
                    resource.status = existing?.status
                    resource.metadata.creationTimestamp = existing?.metadata.creationTimestamp ?? resource.metadata.creationTimestamp ?? Engine.now()
                    try store.write(resource)
                    printOut("checlusterbackupschedule/\(name) \(existing == nil ? "created" : "configured")")
                case .restore:
                    if store.exists(kind, name) {
                        printOut("checlusterrestore/\(name) unchanged (editing a restore has no effect: create a new one)")
                        continue
                    }
                    var resource = try decode(CheClusterRestore.self)
                    resource.status = nil
                    try store.write(resource)
                    printOut("checlusterrestore/\(name) created")
                }
            }
        }
    }
}

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show resources and their status.")
    @OptionGroup var options: ResourceOptions
    @Argument(help: "CheClusterBackup, CheClusterRestore, CheBackupServerConfiguration or Secret.") var kind: String
    @Argument(help: "A name; all when absent.") var name: String?
    @Option(name: .shortAndLong, help: "yaml or json.") var output: String?

    func run() async throws {
        try await runReportingErrors { _ in
            guard let kind = ResourceKind(loose: kind) else { throw CLIError("unknown kind \(self.kind)") }
            let store = try options.store()
            let names = name.map { [$0] } ?? store.names(kind)
            for n in names where !store.exists(kind, n) { throw CLIError("\(kind.rawValue) \(n) not found") }
            if kind == .secret {
                // Secrets are never printed: names and keys only.
                for n in names {
                    let s = try store.load(Secret.self, n)
                    printOut("\(n)  keys: \(s.keys.joined(separator: ", "))")
                }
                return
            }
            switch output {
            case "yaml":
                printOut(try names.map { try store.text(kind, $0) }.joined(separator: "---\n"))
            case "json":
                let values: [Any] = try names.map { n in
                    try Yams.load(yaml: try store.text(kind, n)) as Any
                }
                let data = try JSONSerialization.data(withJSONObject: name == nil ? values : values[0], options: [.prettyPrinted, .sortedKeys])
                printOut(String(decoding: data, as: UTF8.self))
            case nil:
                printOut("NAME                                STATE       STAGE                                     SNAPSHOT")
                for n in names {
                    var status: OperationStatus?
                    if kind == .backup { status = try store.load(CheClusterBackup.self, n).status }
                    if kind == .restore { status = try store.load(CheClusterRestore.self, n).status }
                    let state = status?.state?.rawValue ?? (kind == .backupServerConfiguration ? "-" : "New")
                    printOut("\(n.padding(toLength: 35, withPad: " ", startingAt: 0)) \(state.padding(toLength: 11, withPad: " ", startingAt: 0)) \((status?.stage ?? "-").prefix(40).padding(toLength: 41, withPad: " ", startingAt: 0)) \(status?.snapshotId ?? "-")")
                    if let message = status?.message, message.hasPrefix("Error") { printOut("    \(message)") }
                }
            default:
                throw CLIError("-o takes yaml or json")
            }
        }
    }
}

struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete a resource.")
    @OptionGroup var options: ResourceOptions
    @Argument var kind: String
    @Argument var name: String

    func run() async throws {
        try await runReportingErrors { _ in
            guard let kind = ResourceKind(loose: kind) else { throw CLIError("unknown kind \(self.kind)") }
            let store = try options.store()
            guard unlink(store.path(kind, name)) == 0 else { throw CLIError("\(kind.rawValue) \(name) not found") }
            printOut("\(kind.rawValue.lowercased())/\(name) deleted")
        }
    }
}

struct ControllerDaemon: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "controller",
        abstract: "Run the controller: carry out new CheClusterBackup and CheClusterRestore resources and keep their status.")
    @OptionGroup var mode: ModeOptions
    @Option(name: [.customShort("n"), .customLong("namespace")], help: "Cluster: the namespace to watch (default: the kubeconfig's or the pod's).") var namespace: String?
    @Flag(help: "One pass, then exit.") var once = false
    @Option(help: "Local mode: seconds between looks for new resources.") var interval = 2
    @Option(help: "Cluster: how long to wait until Che's server is Available after a restore (10m, 90s, 1h).") var cheReadyTimeout = "10m"
    @Option(help: "Cluster: the leader Lease's duration (15s).") var leaseDuration = "15s"
    @Option(help: "Cluster: this replica's identity in the Lease (default: the host name and pid).") var identity: String?
    @Option(help: "Cluster: the image of the internal backup server the controller creates.") var internalServerImage = "quay.io/example/chebackup:0.1.0"
    @Option(help: "Cluster: the size of its PersistentVolumeClaim.") var internalServerStorage = "10Gi"
    @Option(help: "Cluster: its storage class (default: the cluster's default class).") var internalServerStorageClass: String?
    @Option(help: "Cluster: how long an operation waits for it to be Available (5m).") var internalServerReadyTimeout = "5m"
    @Option(help: "Cluster: HOST:PORT its configuration names (default: its Service, chebackup-internal-server.NAMESPACE.svc:8000), e.g. a port-forward for a controller outside the cluster.") var internalServerAddress: String?
    @Option(help: "Cluster: the webhook's Service, whose DNS names its serving certificate carries.") var webhookService = "chebackup-webhook"
    @Option(help: "Cluster: the Secret holding that certificate (type kubernetes.io/tls).") var webhookSecret = "chebackup-webhook-tls"
    @Option(help: "Cluster: the MutatingWebhookConfiguration whose caBundle gets the CA.") var webhookConfiguration = "chebackup-sidecar-injector"
    @Flag(inversion: .prefixedNo, help: "Cluster: make and renew the webhook's serving certificate (--no-webhook-certificates: it comes from elsewhere, e.g. cert-manager).") var webhookCertificates = true
    @Option(help: "Serve Prometheus metrics (GET /metrics) on HOST:PORT.") var metricsListen: String?
    @Option(help: "Cluster: the image of the short-lived agents that back up and restore workspace claims.") var workspaceAgentImage = "quay.io/example/chebackup:0.1.0"
    @Option(help: "Cluster: the port they listen on.") var workspaceAgentPort = 7002
    @Option(help: "Cluster: workspace claims backed up or restored at once.") var workspaceParallelism = 4
    @Option(help: "Cluster: how long a workspace agent's pod may take to be Ready (5m).") var workspaceAgentTimeout = "5m"
    @Option(help: "Cluster: the user id workspace agents run as (Che's workspace user).") var workspaceUser: Int64 = 1234
    @Option(help: "Cluster: their fsGroup.") var workspaceFsGroup: Int64 = 1234
    @Flag(name: .shortAndLong, help: "Log more.") var verbose = false

    func validate() throws {
        guard (1...65535).contains(workspaceAgentPort) else { throw ValidationError("--workspace-agent-port must be 1 to 65535") }
        guard workspaceParallelism >= 1 else { throw ValidationError("--workspace-parallelism must be at least 1") }
        guard workspaceUser > 0 else { throw ValidationError("--workspace-user must not be 0 (root)") }
        if let metricsListen, (try? HostPort(metricsListen, allowZero: true)) == nil { throw ValidationError("--metrics-listen must be HOST:PORT") }
    }

    func run() async throws {
        try await runReportingErrors { pool in
            let logger = makeLogger(verbose ? .info : .notice)
            let metrics = try metricsListen.map { try HostPort($0, allowZero: true) }.map { ($0.host.isEmpty ? "0.0.0.0" : $0.host, $0.port) }
            try await withMetrics(metrics, logger: logger) { try await runController(pool: pool, logger: logger) }
        }
    }

    func runController(pool: BlockingPool, logger: Logger) async throws {
        if mode.inCluster {
            let client = try mode.cluster(namespace: namespace, logger: logger)
            var settings = OperatorSettings()
            settings.cheReadyTimeout = try parseDuration(cheReadyTimeout, option: "--che-ready-timeout")
            settings.leaseDuration = try parseDuration(leaseDuration, option: "--lease-duration")
            if let identity { settings.identity = identity }
            settings.internalServer.image = internalServerImage
            settings.internalServer.storageSize = internalServerStorage
            settings.internalServer.storageClass = internalServerStorageClass
            settings.internalServer.readyTimeout = try parseDuration(internalServerReadyTimeout, option: "--internal-server-ready-timeout")
            settings.workspaces.agentImage = workspaceAgentImage
            settings.workspaces.agentPort = workspaceAgentPort
            settings.workspaces.parallelism = workspaceParallelism
            settings.workspaces.readyTimeout = try parseDuration(workspaceAgentTimeout, option: "--workspace-agent-timeout")
            settings.workspaces.runAsUser = workspaceUser
            settings.workspaces.fsGroup = workspaceFsGroup
            settings.webhookCertificates.enabled = webhookCertificates
            settings.webhookCertificates.service = webhookService
            settings.webhookCertificates.secret = webhookSecret
            settings.webhookCertificates.configuration = webhookConfiguration
            if let internalServerAddress {
                let address = try HostPort(internalServerAddress, what: "--internal-server-address")
                settings.internalServer.host = address.host
                settings.internalServer.port = address.port
            }
            try await Operator(client: client, pool: pool, logger: logger, settings: settings).run(once: once)
            return
        }
        let installation = try mode.installation()
        let engine = Engine(drivers: LocalMode.drivers(installation, logger: logger), pool: pool, logger: logger)
        try await engine.failInterrupted()
        if once {
            try await engine.reconcileOnce()
            return
        }
        try await engine.runForever()
    }
}

/// `90s`, `10m`, `1h` or a number of seconds.
func parseDuration(_ text: String, option: String) throws -> Duration {
    let units: [Character: Int] = ["s": 1, "m": 60, "h": 3600]
    var digits = Substring(text)
    var unit = 1
    if let last = text.last, let u = units[last] {
        unit = u
        digits = text.dropLast()
    }
    guard let n = Int(digits), n > 0 else { throw ValidationError("\(option) takes a duration such as 90s, 10m or 1h (not \"\(text)\")") }
    return .seconds(n * unit)
}
