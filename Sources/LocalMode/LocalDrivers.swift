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
                       che: NoCheServer(), defaultServer: { try DefaultServerFile(installation).load() })
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

/// The default server (`server:backup -r`), kept in the state directory.
struct DefaultServerFile {
    let path: String
    let stateDir: String

    init(_ installation: Installation) {
        stateDir = installation.stateDir
        path = installation.stateDir + "/default-server.json"
    }

    func load() throws -> BackupServer? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        do { return try JSONDecoder().decode(BackupServer.self, from: data) } catch {
            throw ControllerError(.invalidResource, "the default backup server settings \(path) are damaged: \(error)")
        }
    }

    func save(_ server: BackupServer) throws {
        try FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let temp = path + ".\(getpid()).tmp"
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        guard FileManager.default.createFile(atPath: temp, contents: try encoder.encode(server), attributes: [.posixPermissions: 0o600]),
              rename(temp, path) == 0 else {
            throw ControllerError(.store, "cannot save the default backup server in \(stateDir)")
        }
    }
}

extension LocalMode {
    /// Makes `server` the default for later commands.
    public static func saveDefaultServer(_ server: BackupServer, _ installation: Installation) throws {
        try DefaultServerFile(installation).save(server)
    }
}
