/// Agent: the `chebackup-agent` sidecar. It serves the control protocol (protocol.md) on TCP or
/// a Unix socket and backs up or restores its role's data straight into the repository.
import ArgumentParser
import Foundation
import LineProtocol
import Logging
import Repository
import Storage

@main
struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "chebackup-agent",
                                                    abstract: "che-backup sidecar agent.", version: "0.1.0")

    enum RoleName: String, ExpressibleByArgument, CaseIterable { case postgres, files }

    @Option(help: "The agent's role: postgres or files.") var role: RoleName
    @Option(help: "Listen on HOST:PORT.") var listen: String?
    @Option(help: "Listen on a Unix socket at this path.") var socket: String?
    @Option(help: "File holding the shared token (as a mounted Kubernetes Secret).") var tokenFile: String
    @Option(help: "This installation's id, reported in the handshake.") var installationId = "local"
    @Option(help: "Longest accepted protocol line, in bytes.") var maxLineLength = 1 << 20
    @Option(help: "Seconds a connection may take to authenticate.") var handshakeTimeout = 30
    @Option(help: "Connections that may wait to authenticate at once; more are refused.") var maxPendingConnections = 64
    @Option(name: .customLong("database"), help: "postgres: a database to back up (repeatable; default: all).") var databases: [String] = []
    @Option(help: "postgres: directory of pg_dump, pg_restore, psql.") var pgBin = "/usr/lib/postgresql/15/bin"
    @Option(name: .customLong("dir"), help: "files: NAME=PATH, a directory to back up as part files/NAME (repeatable).") var dirs: [String] = []
    @Option(help: "files: what the parts' names start with: files, or workspaces/NAMESPACE for a workspace claim's agent.") var partPrefix = "files"
    @Option(help: "files: command run before a backup.") var preHook: String?
    @Option(help: "files: command run after a backup (also when it failed).") var postHook: String?
    @Option(help: "Seconds a hook may run.") var hookTimeout = 300
    @Flag(name: .shortAndLong, help: "Log more.") var verbose = false

    func validate() throws {
        if (listen == nil) == (socket == nil) { throw ValidationError("give exactly one of --listen HOST:PORT and --socket PATH") }
        if role == .files && dirs.isEmpty { throw ValidationError("the files role needs at least one --dir NAME=PATH") }
        for d in dirs where !d.contains("=") { throw ValidationError("--dir takes NAME=PATH, got \(d)") }
        let components = partPrefix.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(components.count), components.allSatisfy({ Self.isNameComponent($0) }),
              components.count == 1 ? partPrefix == "files" : components[0] == "workspaces" else {
            throw ValidationError("--part-prefix must be files or workspaces/NAMESPACE, not \(partPrefix)")
        }
        if handshakeTimeout < 1 { throw ValidationError("--handshake-timeout must be at least 1 second") }
        if maxPendingConnections < 1 { throw ValidationError("--max-pending-connections must be at least 1") }
        // A request carries the repository's location and sealed credentials (a CA or an SSH key):
        // below 64 KiB an agent would refuse ordinary requests.
        if !(Self.minLineLength...Self.maxLineLimit).contains(maxLineLength) {
            throw ValidationError("--max-line-length must be between \(Self.minLineLength) and \(Self.maxLineLimit) bytes, not \(maxLineLength)")
        }
        if hookTimeout < 1 { throw ValidationError("--hook-timeout must be at least 1 second") }
    }

    static let minLineLength = 64 << 10
    static let maxLineLimit = 1 << 30

    /// A DNS label: lower-case letters, digits and '-', 1 to 63 of them, no '-' at either end.
    static func isNameComponent(_ s: Substring) -> Bool {
        guard (1...63).contains(s.utf8.count), s.first != "-", s.last != "-" else { return false }
        return s.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" }
    }

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)  // a tool that dies must give a write error, not kill the agent
        RepositoryLock.releaseOnTermination()  // a deleted pod's agent removes the locks it holds
        tuneAllocator()
        var logger = Logger(label: "chebackup-agent") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = verbose ? .info : .notice
        let token: SharedToken
        do { token = try SharedToken.load(file: tokenFile) } catch let error as ErrorMessage {
            FileHandle.standardError.write(Data("chebackup-agent: error: \(error.message)\n".utf8))
            throw ExitCode.failure
        }
        if let warning = SharedToken.permissionWarning(file: tokenFile) {
            FileHandle.standardError.write(Data("chebackup-agent: warning: \(warning)\n".utf8))
        }
        let roleImpl: any Role
        switch role {
        case .postgres:
            roleImpl = PostgresRole(databases: databases, binDirectory: pgBin)
        case .files:
            var map: [String: String] = [:]
            for d in dirs {
                let parts = d.split(separator: "=", maxSplits: 1)
                map[String(parts[0])] = String(parts[1])
            }
            roleImpl = FilesRole(partPrefix: partPrefix, directories: map, preHook: preHook, postHook: postHook, hookTimeout: .seconds(hookTimeout))
        }
        let endpoint: Endpoint
        if let socket {
            endpoint = .unix(path: socket)
        } else {
            guard let address = try? HostPort(listen!, allowZero: true) else { throw ValidationError("--listen must be HOST:PORT") }
            endpoint = .tcp(host: address.host, port: address.port)
        }
        let server = AgentServer(role: roleImpl, token: token, installationID: installationId, maxLineLength: maxLineLength,
                                 handshakeTimeout: .seconds(handshakeTimeout), maxUnauthenticated: maxPendingConnections, logger: logger)
        do {
            try await server.serve(endpoint) { address in
                FileHandle.standardError.write(Data("chebackup-agent: \(role.rawValue) agent listening on \(address)\n".utf8))
            }
        } catch {
            FileHandle.standardError.write(Data("chebackup-agent: error: \(error)\n".utf8))
            throw ExitCode.failure
        }
    }
}
