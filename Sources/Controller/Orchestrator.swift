import AgentClient
import Foundation
import LineProtocol
import Logging
import Repository
import Storage
import Subprocess

/// The one engine behind `server:backup` and `server:restore`: it talks to the agents, backs up
/// the installation's objects itself, and writes the snapshot last. Progress goes to `stage`.
struct Orchestrator: Sendable {
    let installation: Installation
    let server: BackupServer
    let token: SharedToken
    let pool: BlockingPool
    let logger: Logger
    let stage: @Sendable (String) -> Void

    static let objectsPart = "che/objects"

    func endpoints() throws -> [(role: String, endpoint: AgentEndpoint)] {
        try installation.agents.map { agent in
            do { return (agent.role, try AgentEndpoint(agent.address)) } catch let error as AgentError {
                throw CLIError(error.message)
            }
        }
    }

    /// Opens the server's repository, creating it on first use.
    func openRepository(create: Bool) async throws -> Repository {
        stage("Connecting to the backup repository \(server.url)")
        let url: RepositoryURL
        do { url = try RepositoryURL.parse(server.url) } catch let e as RepositoryURL.ParseError {
            throw CLIError("invalid repository URL: \(e.description)")
        }
        let storage = try StorageStack.open(url, credentials: try server.credentials(installation), pool: pool, logger: logger)
        do {
            return try await Repository.open(storage: storage, password: server.secrets.repositoryPassword, logger: logger)
        } catch let error as RepositoryError where error.code == .notARepository && create {
            stage("Initializing a new repository at \(storage.location)")
            return try await Repository.initialize(storage: storage, password: server.secrets.repositoryPassword, logger: logger)
        }
    }

    func backup() async throws -> (SnapshotID, Snapshot) {
        let repo = try await openRepository(create: true)
        stage("Collecting Che installation data")
        guard FileManager.default.fileExists(atPath: installation.objectsDir) else {
            throw CLIError("the installation's objects directory \(installation.objectsDir) does not exist")
        }
        var options = BackupOptions()
        options.connections = repo.storage.defaultConnections
        let objects = try await repo.storeParts([.path(installation.objectsDir, name: Self.objectsPart)], options: options)
        let agentParts = try await withThrowingTaskGroup(of: [Part].self) { group in
            for (role, endpoint) in try endpoints() {
                group.addTask {
                    try await AgentClient.withSession(endpoint, token: token, expectedRole: role) { session in
                        stage("Backing up \(role) data through the agent at \(endpoint)")
                        return try await session.backup(url: server.url, secrets: server.secrets) { event in
                            logger.debug("\(role): \(event.stage) \(event.bytes) bytes")
                        }
                    }
                }
            }
            var all: [Part] = []
            for try await parts in group { all += parts }
            return all.sorted { $0.name < $1.name }
        }
        stage("Sending the snapshot")
        options.metadata = [
            "backupFormat": "1", "cheVersion": installation.cheVersion, "namespace": installation.namespace,
            "domain": installation.domain, "installationId": installation.id,
        ]
        options.tags = ["che"]
        return try await repo.commitSnapshot(parts: objects.parts + agentParts, options: options, parent: objects.parent)
    }

    func restore(snapshot: String, relocate: Bool = false, confirm: @Sendable (Snapshot, SnapshotID) throws -> Void) async throws
        -> (SnapshotID, Snapshot) {
        let repo = try await openRepository(create: false)
        stage("Downloading the snapshot record")
        let (id, snap) = try await repo.resolveSnapshot(snapshot)
        let rewrite = try relocation(snap, allowed: relocate)
        try confirm(snap, id)
        stage("Cleaning up the existing installation and restoring cluster objects")
        if let objects = snap.parts.first(where: { $0.name == Self.objectsPart }) {
            var options = RestoreOptions()
            options.deleteExtraneous = true
            options.connections = repo.storage.defaultConnections
            _ = try await Restorer(repository: repo, options: options).restoreTree(objects, into: installation.objectsDir)
            if !rewrite.isEmpty {
                stage("Rewriting namespace and domain in the cluster objects")
                try rewriteObjects(snap)
            }
        }
        stage("Restoring databases and data")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (role, endpoint) in try endpoints() where snap.parts.contains(where: { $0.name.hasPrefix(role + "/") }) {
                group.addTask {
                    try await AgentClient.withSession(endpoint, token: token, expectedRole: role) { session in
                        stage("Restoring \(role) data through the agent at \(endpoint)")
                        _ = try await session.restore(url: server.url, secrets: server.secrets, snapshot: id, rewrite: rewrite)
                    }
                }
            }
            try await group.waitForAll()
        }
        stage("Waiting until Che is ready: local mode has no Che server to wait for")
        return (id, snap)
    }
}

extension Orchestrator {
    /// A snapshot of another namespace or domain is restored only when asked (`--relocate`);
    /// then the database rows that carry the old domain or the old namespace's service names
    /// are rewritten to this installation's.
    func relocation(_ snap: Snapshot, allowed: Bool) throws -> [Rewrite] {
        let (oldNS, oldDomain) = (snap.metadata["namespace"] ?? installation.namespace, snap.metadata["domain"] ?? installation.domain)
        guard oldNS != installation.namespace || oldDomain != installation.domain else { return [] }
        guard allowed else {
            throw CLIError("the snapshot was made for namespace \(oldNS), domain \(oldDomain); this installation is namespace \(installation.namespace), domain \(installation.domain): restore with --relocate to rewrite them")
        }
        var rewrite: [Rewrite] = []
        if oldDomain != installation.domain { rewrite.append(Rewrite(from: oldDomain, to: installation.domain)) }
        if oldNS != installation.namespace { rewrite.append(Rewrite(from: "\(oldNS).svc", to: "\(installation.namespace).svc")) }
        return rewrite
    }

    /// Rewrites `namespace:` fields, service names and the domain in the restored objects.
    func rewriteObjects(_ snap: Snapshot) throws {
        let (oldNS, oldDomain) = (snap.metadata["namespace"] ?? installation.namespace, snap.metadata["domain"] ?? installation.domain)
        let files = FileManager.default.enumerator(atPath: installation.objectsDir)?.compactMap { $0 as? String } ?? []
        for file in files where file.hasSuffix(".yaml") || file.hasSuffix(".yml") || file.hasSuffix(".json") {
            let path = installation.objectsDir + "/" + file
            guard var text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
            let before = text
            if oldNS != installation.namespace {
                text = text.replacingOccurrences(of: "namespace: \(oldNS)\\b", with: "namespace: \(installation.namespace)", options: .regularExpression)
                text = text.replacingOccurrences(of: "\"namespace\": \"\(oldNS)\"", with: "\"namespace\": \"\(installation.namespace)\"")
                text = text.replacingOccurrences(of: "\(oldNS).svc", with: "\(installation.namespace).svc")
            }
            if oldDomain != installation.domain { text = text.replacingOccurrences(of: oldDomain, with: installation.domain) }
            if text != before {
                var st = stat()
                stat(path, &st)
                var times = [st.st_atim, st.st_mtim]
                try text.write(toFile: path, atomically: true, encoding: .utf8)
                utimensat(AT_FDCWD, path, &times, 0)
            }
        }
    }
}

/// The internal backup server in local mode: `chebackup rest-server` started for the command's
/// duration on the configured address, storing in the state directory.
final class InternalServerProcess: Sendable {
    let process: Subprocess

    init(installation: Installation) throws {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        try FileManager.default.createDirectory(atPath: installation.internalServerPath, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        process = try Subprocess(exe, ["rest-server", "--path", installation.internalServerPath, "--listen", installation.internalServer.listen],
                                 outputFile: installation.stateDir + "/backup-server.log")
        let parts = installation.internalServer.listen.split(separator: ":")
        guard let port = parts.last.flatMap({ Int($0) }) else { throw CLIError("internalServer.listen must be HOST:PORT") }
        let host = parts.dropLast().joined(separator: ":")
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if Self.accepts(host: host.isEmpty ? "127.0.0.1" : host, port: port) { return }
            if !process.isRunning { break }
            usleep(50_000)
        }
        process.abort()
        throw CLIError("the internal backup server did not start on \(installation.internalServer.listen); see \(installation.stateDir)/backup-server.log")
    }

    static func accepts(host: String, port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr(host == "0.0.0.0" ? "127.0.0.1" : host)
        addr.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
    }

    func stop() {
        process.abort()
        _ = process.waitBlocking()
    }
}
