import Foundation
import LineProtocol
import Storage

/// The backup server the `server:*` commands use: a repository URL (no password in it) and its
/// secrets. The default one is kept in the state directory; secrets in a file only the owner can
/// read (a Kubernetes Secret in a cluster).
struct BackupServer: Codable, Sendable {
    var url: String
    var secrets: RepositorySecrets
    var isInternal: Bool

    static func defaultPath(_ installation: Installation) -> String { installation.stateDir + "/default-server.json" }

    static func loadDefault(_ installation: Installation) throws -> BackupServer? {
        let path = defaultPath(installation)
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        do { return try JSONDecoder().decode(BackupServer.self, from: data) } catch {
            throw CLIError("the default backup server settings \(path) are damaged: \(error)")
        }
    }

    func saveAsDefault(_ installation: Installation) throws {
        try FileManager.default.createDirectory(atPath: installation.stateDir, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        let path = Self.defaultPath(installation)
        let temp = path + ".tmp"
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        guard FileManager.default.createFile(atPath: temp, contents: try encoder.encode(self), attributes: [.posixPermissions: 0o600]),
              rename(temp, path) == 0 else {
            throw CLIError("cannot save the default backup server in \(installation.stateDir)")
        }
    }

    /// The credentials for opening the backend here, in the controller.
    func credentials(_ installation: Installation) throws -> BackendCredentials {
        try secrets.backendCredentials(filesIn: installation.stateDir + "/tmp")
    }
}
