import ControllerCore
import Foundation
import Yams

/// The one configuration file that describes a Che installation to the controller (local mode):
/// where its agents listen, the token they share, where its objects and the controller's state
/// live, and its namespace and domain. See README "Configuration".
public struct Installation: Codable, Sendable {
    public struct Agent: Codable, Sendable {
        public var role: String
        public var address: String
    }

    public struct InternalServer: Codable, Sendable {
        /// HOST:PORT the internal REST backup server listens on (agents must reach it).
        public var listen: String = "127.0.0.1:8000"
        /// Its storage; default `<stateDir>/backup-server`. Persistent: backups survive restarts.
        public var path: String?
    }

    public var id: String = "che"
    public var namespace: String = "eclipse-che"
    public var domain: String = "che.example.com"
    public var cheVersion: String = "unknown"
    /// The installation's objects (CheCluster, Che's secrets and configmaps) as YAML files.
    public var objectsDir: String
    public var agents: [Agent]
    /// The shared token file (a mounted Kubernetes Secret in a cluster).
    public var tokenFile: String
    /// The controller's state: default server, its secrets, the internal server's data.
    public var stateDir: String
    public var internalServer: InternalServer = InternalServer()

    enum CodingKeys: String, CodingKey {
        case id, namespace, domain, cheVersion, objectsDir, agents, tokenFile, stateDir, internalServer
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decodeIfPresent(String.self, forKey: .id) ?? "che"
        namespace = try c.decodeIfPresent(String.self, forKey: .namespace) ?? "eclipse-che"
        domain = try c.decodeIfPresent(String.self, forKey: .domain) ?? "che.example.com"
        cheVersion = try c.decodeIfPresent(String.self, forKey: .cheVersion) ?? "unknown"
        objectsDir = try c.decode(String.self, forKey: .objectsDir)
        agents = try c.decode([Agent].self, forKey: .agents)
        tokenFile = try c.decode(String.self, forKey: .tokenFile)
        stateDir = try c.decode(String.self, forKey: .stateDir)
        internalServer = try c.decodeIfPresent(InternalServer.self, forKey: .internalServer) ?? InternalServer()
    }

    public static func load(_ path: String) throws -> Installation {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ControllerError(.notFound, "cannot read the installation configuration \(path) (use --config or CHEBACKUP_CONFIG)")
        }
        let installation: Installation
        do {
            installation = try YAMLDecoder().decode(Installation.self, from: text)
        } catch {
            throw ControllerError(.invalidResource, "invalid installation configuration \(path): \(Self.describe(error))")
        }
        for agent in installation.agents where !["postgres", "files"].contains(agent.role) {
            throw ControllerError(.invalidResource, "invalid installation configuration \(path): unknown agent role \"\(agent.role)\"")
        }
        return installation
    }

    public static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): return "missing \"\(key.stringValue)\""
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            return "\"\(context.codingPath.map(\.stringValue).joined(separator: "."))\" has the wrong type"
        default: return "\(error)"
        }
    }

    public var internalServerPath: String { internalServer.path ?? stateDir + "/backup-server" }
}

extension Installation {
    /// The configuration file a command uses: its `--config`, else `$CHEBACKUP_CONFIG`, else `./chebackup.yaml`.
    public static func load(option: String?) throws -> Installation {
        try load(option ?? ProcessInfo.processInfo.environment["CHEBACKUP_CONFIG"] ?? "chebackup.yaml")
    }

    public var info: InstallationInfo { InstallationInfo(id: id, namespace: namespace, domain: domain, cheVersion: cheVersion) }
}
