import AgentClient
import ControllerCore
import Foundation
import LineProtocol
import Logging
import Repository
import Storage
import Subprocess

/// Local mode: the engine's drivers over the configuration file, the state directory and the
/// objects directory, with agents at the addresses the file lists.
public enum LocalMode {
    public static func drivers(_ installation: Installation, logger: Logger) -> Drivers {
        let store = FileResourceStore(stateDir: installation.stateDir, logger: logger)
        return Drivers(resources: store, secrets: store, agents: ConfiguredAgents(installation: installation),
                       token: TokenFile(path: installation.tokenFile), objects: ObjectsDirectory(installation: installation),
                       internalServer: InternalServerProcessHost(installation: installation, store: store),
                       che: NoCheServer(), defaultServer: { try await DefaultServerFile(installation).load(store) })
    }
}

/// The agents listed in the configuration file.
struct ConfiguredAgents: AgentDirectory {
    let installation: Installation
    func agents() async throws -> [AgentRef] {
        try installation.agents.map { agent in
            do { return AgentRef(role: agent.role, endpoint: try AgentEndpoint(agent.address)) } catch let error as AgentError {
                throw ControllerError(.invalidResource, error.message)
            }
        }
    }
}

/// The token in a file (a mounted Secret in a cluster).
struct TokenFile: AgentTokenSource {
    let path: String
    func token() async throws -> SharedToken { try SharedToken.load(file: path) }
}

/// No Che server runs in local mode: nothing to stop or wait for.
struct NoCheServer: CheServer {
    func stop(stage: @escaping @Sendable (String) -> Void) async throws -> CheServerState { CheServerState() }
    func start(_ state: CheServerState, stage: @escaping @Sendable (String) -> Void) async throws {
        stage("Waiting until Che is ready: local mode has no Che server to wait for")
    }
}

/// The installation's objects as files in the objects directory.
struct ObjectsDirectory: InstallationObjects {
    let installation: Installation

    func info() async throws -> InstallationInfo { installation.info }

    func backup(into repository: Repository, part name: String, options: BackupOptions) async throws -> (parts: [Part], parent: SnapshotID?) {
        guard FileManager.default.fileExists(atPath: installation.objectsDir) else {
            throw ControllerError(.notFound, "the installation's objects directory \(installation.objectsDir) does not exist")
        }
        let stored = try await repository.storeParts([.path(installation.objectsDir, name: name)], options: options)
        return (stored.parts, stored.parent)
    }

    func restore(_ part: Part, from repository: Repository, relocation: Relocation, stage: @escaping @Sendable (String) -> Void) async throws {
        var options = RestoreOptions()
        options.deleteExtraneous = true
        options.connections = repository.storage.defaultConnections
        _ = try await Restorer(repository: repository, options: options).restoreTree(part, into: installation.objectsDir)
        if !relocation.isEmpty {
            stage("Rewriting namespace and domain in the cluster objects")
            try ObjectFiles.rewrite(in: installation.objectsDir, relocation)
        }
    }
}

/// Object files (YAML or JSON) in a directory tree.
public enum ObjectFiles {
    /// Rewrites every object file for a relocation, keeping its times.
    public static func rewrite(in dir: String, _ relocation: Relocation) throws {
        let files = FileManager.default.enumerator(atPath: dir)?.compactMap { $0 as? String } ?? []
        for file in files where file.hasSuffix(".yaml") || file.hasSuffix(".yml") || file.hasSuffix(".json") {
            let path = dir + "/" + file
            let before: String
            do { before = try String(contentsOfFile: path, encoding: .utf8) } catch {
                throw ControllerError(.store, "cannot read the restored object \(path): \(error.localizedDescription)")
            }
            let text = relocation.rewrite(before)
            guard text != before else { continue }
            var st = stat()
            stat(path, &st)
            var times = [st.st_atim, st.st_mtim]
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            utimensat(AT_FDCWD, path, &times, 0)
        }
    }
}

/// The default server (`server:backup -r`), kept in the state directory. The file names where
/// the server is, never its secrets: those are Secrets in the state directory, as for every
/// other configuration. A REST, S3 or SFTP server becomes the CheBackupServerConfiguration
/// `chebackup-default` (with Secrets `chebackup-default-…`); a `local:` repository, which has no
/// configuration form, is kept as its URL and the Secret with its password.
struct DefaultServerFile {
    static let configurationName = "chebackup-default"
    let path: String
    let stateDir: String
    let namespace: String

    init(_ installation: Installation) {
        stateDir = installation.stateDir
        namespace = installation.namespace
        path = installation.stateDir + "/default-server.json"
    }

    /// What the file holds: a configuration's name, or a local repository and its password's Secret.
    struct Reference: Codable {
        var configuration: String?
        var url: String?
        var repositoryPasswordSecretRef: String?
    }

    func load(_ store: FileResourceStore) async throws -> BackupServer? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        if let legacy = try? JSONDecoder().decode(BackupServer.self, from: data) {
            // Written by an older version, passwords and all: move them into Secrets.
            try save(legacy, store)
            return legacy
        }
        guard let reference = try? JSONDecoder().decode(Reference.self, from: data) else {
            throw ControllerError(.invalidResource, "the default backup server settings \(path) are damaged")
        }
        if let name = reference.configuration {
            guard let config = try await store.get(CheBackupServerConfiguration.self, name) else {
                throw ControllerError(.notFound, "the default backup server's CheBackupServerConfiguration \(name) is gone: give -r again")
            }
            return try await BackupServer(configuration: config, secrets: store)
        }
        guard let url = reference.url, let secretName = reference.repositoryPasswordSecretRef else {
            throw ControllerError(.invalidResource, "the default backup server settings \(path) name no server")
        }
        guard let password = try await store.secret(secretName)?.value("repo-password") else {
            throw ControllerError(.notFound, "secret \(secretName) (the default server's repository password) not found: give -r and -p again")
        }
        return BackupServer(url: url, secrets: RepositorySecrets(repositoryPassword: password), isInternal: false)
    }

    func save(_ server: BackupServer, _ store: FileResourceStore) throws {
        let meta = { (name: String) in ObjectMeta(name: name, namespace: namespace, creationTimestamp: Engine.now()) }
        var reference = Reference()
        if case .local = try? RepositoryURL.parse(server.url) {
            let secret = Secret(metadata: meta(Self.configurationName + "-repo-password"),
                                stringData: ["repo-password": server.secrets.repositoryPassword])
            try store.write(secret)
            reference.url = server.url
            reference.repositoryPasswordSecretRef = secret.metadata.name
        } else {
            let (config, secrets) = try server.configuration(name: Self.configurationName, namespace: namespace,
                                                             secretPrefix: Self.configurationName + "-")
            for var secret in secrets {
                secret.metadata.creationTimestamp = Engine.now()
                try store.write(secret)
            }
            var stamped = config
            stamped.metadata.creationTimestamp = Engine.now()
            try store.write(stamped)
            reference.configuration = config.metadata.name
        }
        try FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let temp = path + ".\(getpid()).tmp"
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        guard FileManager.default.createFile(atPath: temp, contents: try encoder.encode(reference), attributes: [.posixPermissions: 0o600]),
              rename(temp, path) == 0 else {
            throw ControllerError(.store, "cannot save the default backup server in \(stateDir)")
        }
    }
}

extension LocalMode {
    /// Makes `server` the default for later commands: call it only once the server was reached
    /// and its repository opened.
    public static func saveDefaultServer(_ server: BackupServer, _ installation: Installation, logger: Logger) throws {
        try DefaultServerFile(installation).save(server, FileResourceStore(stateDir: installation.stateDir, logger: logger))
    }
}
