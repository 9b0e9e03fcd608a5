import AgentClient
import Foundation
import LineProtocol
import Logging
import Repository
import Storage
import Testing
import TestSupport

let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
let tokenText = "agent-test-token-6f1c0e8a4b7d92e35a1f60c4d8b7e293a5c1d0f7e6b4a398"
let token = try! SharedToken(Data(tokenText.utf8))
let agentLogger: Logger = {
    var l = Logger(label: "agent-test")
    l.logLevel = .error
    return l
}()
let agentPool = BlockingPool(threads: 8, name: "agent-test")

/// A throwaway PostgreSQL cluster (scripts/pg-cluster.sh).
final class PostgresCluster: @unchecked Sendable {
    let dir: String
    let env: [String: String]

    init(seed: Bool) throws {
        dir = TempDir("chebackup-pg").path
        let start = try runDetached(repoRoot + "/scripts/pg-cluster.sh", ["start", dir])
        guard start.status == 0 else { throw ConformanceFailure("pg-cluster start failed: \(start.stderr)") }
        var env: [String: String] = [:]
        for line in try String(contentsOfFile: dir + "/env", encoding: .utf8).split(separator: "\n") {
            let kv = line.replacingOccurrences(of: "export ", with: "").split(separator: "=", maxSplits: 1)
            if kv.count == 2 { env[String(kv[0])] = String(kv[1]) }
        }
        self.env = env
        if seed {
            let seeded = try runDetached(repoRoot + "/scripts/pg-cluster.sh", ["seed", dir])
            guard seeded.status == 0 else { throw ConformanceFailure("seed failed: \(seeded.stderr)") }
        }
    }

    /// A new cluster, started (and seeded) on a thread of its own: initdb takes seconds, which
    /// must not hold one of the few threads every test's tasks run on.
    static func make(seed: Bool) async throws -> PostgresCluster {
        try await onThread { try PostgresCluster(seed: seed) }
    }

    /// Per-table row counts and checksums, owners, sequences, indexes and roles.
    func checksum() async throws -> String {
        let r = try await runDetachedAsync(repoRoot + "/scripts/pg-cluster.sh", ["checksum", dir])
        guard r.status == 0 else { throw ConformanceFailure("checksum failed: \(r.stderr)") }
        return r.stdout
    }

    func psql(_ sql: String, database: String = "postgres") async throws -> CommandResult {
        try await runAsync("/usr/bin/psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql], environment: env)
    }

    /// Stopped on a thread of its own: the last reference usually goes on one of the threads every
    /// test's tasks share, and pg_ctl waits for the shutdown.
    deinit {
        let dir = dir
        Thread.detachNewThread { _ = try? runDetached(repoRoot + "/scripts/pg-cluster.sh", ["stop", dir]) }
    }
}

/// A `chebackup-agent` process on a free port, waited for suspended (never blocking one of the
/// few threads every test's tasks share: a blocked pool delays other tests' handshakes past the
/// agents' handshake time-out).
final class AgentProcess: @unchecked Sendable {
    let process: ChildProcess
    let endpoint: AgentEndpoint
    let dir: TempDir

    init(role: String, arguments: [String] = [], environment: [String: String] = [:], tokenText: String = tokenText) async throws {
        dir = TempDir("chebackup-agent")
        try tokenText.write(toFile: dir.file("token"), atomically: true, encoding: .utf8)
        chmod(dir.file("token"), 0o600)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: builtProduct("chebackup-agent"))
        // Port 0: the agent binds a free port itself and says which; a port picked beforehand
        // could be taken by another test's process before the agent binds it.
        process.arguments = ["--role", role, "--listen", "127.0.0.1:0", "--token-file", dir.file("token")] + arguments
        var env = ProcessInfo.processInfo.environment
        env.merge(environment) { _, new in new }
        process.environment = env
        let child = try ChildProcess(launching: process, log: dir.file("agent.log"))
        self.process = child
        guard let port = await child.waitForPort(announcedAfter: "agent listening on 127.0.0.1:") else {
            throw ConformanceFailure("agent did not start: \(child.log)")
        }
        endpoint = .tcp(host: "127.0.0.1", port: port)
    }

    var log: String { process.log }

    deinit {
        process.kill(signal: SIGTERM)
        dir.remove()
    }
}

/// A local repository for agent tests.
func makeLocalRepository(_ dir: TempDir) async throws -> (url: String, repo: Repository) {
    let path = dir.file("repository")
    let storage = try StorageStack.open(.local(path: path), pool: agentPool, logger: agentLogger)
    var options = RepositoryOptions()
    options.kdf = KDFParameters(n: 1 << 10)
    let repo = try await Repository.initialize(storage: storage, password: "repo-pw", options: options, logger: agentLogger)
    return ("local:" + path, repo)
}

let secrets = RepositorySecrets(repositoryPassword: "repo-pw")
