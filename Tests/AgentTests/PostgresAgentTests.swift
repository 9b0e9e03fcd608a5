import AgentClient
import Foundation
import LineProtocol
import Repository
import Storage
import Testing
import TestSupport

let postgresAvailable = FileManager.default.isExecutableFile(atPath: "/usr/lib/postgresql/15/bin/initdb")

/// Real PostgreSQL 15: Che-like databases through the postgres agent and back.
@Suite(.enabled(if: postgresAvailable), .serialized) struct PostgresAgentTests {
    @Test func roundTripIntoTheSameServerAndIntoAFreshEmptyOne() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let source = try await PostgresCluster.make(seed: true)
        let before = try await source.checksum()
        let (url, repo) = try await makeLocalRepository(dir)
        let agent = try await AgentProcess(role: "postgres", environment: source.env)

        let events = Locked<[String]>([])
        let parts = try await AgentClient.withSession(agent.endpoint, token: token, expectedRole: "postgres") { session in
            try await session.backup(url: url, secrets: secrets) { event in events.withLock { $0.append(event.stage) } }
        }
        #expect(parts.map(\.name) == ["postgres/globals", "postgres/dbche", "postgres/keycloak"])
        #expect(parts.allSatisfy { $0.kind == .stream && $0.stats.bytes > 0 })
        #expect(events.value.contains { $0.contains("dumping database dbche") }, "\(events.value)")
        let (snapshotID, _) = try await repo.commitSnapshot(parts: parts)

        // Delete the databases, restore, compare.
        _ = try await source.psql("DROP DATABASE dbche")
        _ = try await source.psql("UPDATE pg_database SET datallowconn = true WHERE datname = 'keycloak'")
        let restored = try await AgentClient.withSession(agent.endpoint, token: token) { session in
            try await session.restore(url: url, secrets: secrets, snapshot: snapshotID)
        }
        #expect(restored.sorted() == parts.map(\.name).sorted())
        #expect(try await source.checksum() == before)

        // A freshly initialised, empty server: roles come back first, then the databases.
        let fresh = try await PostgresCluster.make(seed: false)
        #expect(try await fresh.checksum() != before)
        let freshAgent = try await AgentProcess(role: "postgres", environment: fresh.env)
        _ = try await AgentClient.withSession(freshAgent.endpoint, token: token) { session in
            try await session.restore(url: url, secrets: secrets, snapshot: snapshotID)
        }
        #expect(try await fresh.checksum() == before)
    }

    /// A seeded cluster, its agent, and a snapshot of it in a new local repository.
    func seededBackup(_ dir: TempDir) async throws -> (PostgresCluster, AgentProcess, String, SnapshotID) {
        let cluster = try await PostgresCluster.make(seed: true)
        let (url, repo) = try await makeLocalRepository(dir)
        let agent = try await AgentProcess(role: "postgres", environment: cluster.env)
        let parts = try await AgentClient.withSession(agent.endpoint, token: token) { try await $0.backup(url: url, secrets: secrets) }
        return (cluster, agent, url, try await repo.commitSnapshot(parts: parts).0)
    }

    @Test func restoringIntoAnotherDomainRewritesTheRowsThatCarryIt() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (cluster, agent, url, id) = try await seededBackup(dir)
        _ = try await AgentClient.withSession(agent.endpoint, token: token) { session in
            try await session.restore(url: url, secrets: secrets, snapshot: id, rewrite: [Rewrite(from: "che.example.com", to: "che.other.org")])
        }
        func count(_ pattern: String) async throws -> String {
            try await runAsync("/usr/bin/psql", ["-X", "-At", "-d", "dbche", "-c", "SELECT count(*) FROM che_workspace WHERE devfile::text LIKE '%\(pattern)%'"],
                    environment: cluster.env).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        #expect(try await count("che.other.org") == "20000")
        #expect(try await count("che.example.com") == "0")
    }

    /// A rewrite value that closes the old `$rewrite$` quoting (or any quoting) must never reach
    /// SQL: it is refused before anything is restored, and the rows stay as they are.
    @Test func rewriteValuesThatAreNotHostNamesAreRefusedBeforeAnyRestore() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (cluster, agent, url, id) = try await seededBackup(dir)
        _ = try await cluster.psql("CREATE TABLE canary (x int); INSERT INTO canary VALUES (1);", database: "dbche")
        let before = try await cluster.checksum()
        for evil in ["x$rewrite$; DROP TABLE canary; --", "a'; DROP TABLE canary; --", "che.example.com\n\\! touch /tmp/pwned", "-leading.dash", ""] {
            do {
                _ = try await AgentClient.withSession(agent.endpoint, token: token) { session in
                    try await session.restore(url: url, secrets: secrets, snapshot: id, rewrite: [Rewrite(from: "che.example.com", to: evil)])
                }
                Issue.record("rewrite to \(evil) was accepted")
            } catch let error as AgentError {
                #expect(error.code == "invalid_request", "\(error)")
                #expect(error.message.contains("is not a host name or namespace"), "\(error.message)")
            }
        }
        #expect(try await cluster.checksum() == before, "nothing was restored or rewritten")
        let canary = try await runAsync("/usr/bin/psql", ["-X", "-At", "-d", "dbche", "-c", "SELECT count(*) FROM canary"], environment: cluster.env)
        #expect(canary.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "1", "\(canary.stderr)")
    }

    @Test func aFailingDumpCarriesTheToolsMessageAndStoresNoSnapshot() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let cluster = try await PostgresCluster.make(seed: false)
        let (url, repo) = try await makeLocalRepository(dir)
        let agent = try await AgentProcess(role: "postgres", arguments: ["--database", "no_such_db"], environment: cluster.env)
        do {
            _ = try await AgentClient.withSession(agent.endpoint, token: token) { session in
                try await session.backup(url: url, secrets: secrets)
            }
            Issue.record("a backup of a missing database succeeded")
        } catch let error as AgentError {
            #expect(error.code == "source_failed", "\(error)")
            #expect(error.message.contains("pg_dump") && error.message.contains("no_such_db"), "\(error.message)")
        }
        #expect(try await repo.listSnapshots().isEmpty)
        // The agent is still there for the next request.
        try await AgentClient.withSession(agent.endpoint, token: token) { session in try await session.ping() }
    }

    @Test func aWrongRepositoryPasswordIsARepositoryError() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let cluster = try await PostgresCluster.make(seed: false)
        let (url, _) = try await makeLocalRepository(dir)
        let agent = try await AgentProcess(role: "postgres", environment: cluster.env)
        do {
            _ = try await AgentClient.withSession(agent.endpoint, token: token) { session in
                try await session.backup(url: url, secrets: RepositorySecrets(repositoryPassword: "wrong-one"))
            }
            Issue.record("a wrong password was accepted")
        } catch let error as AgentError {
            #expect(error.code == "repository")
            #expect(error.message.contains("wrong password") && !error.message.contains("wrong-one"), "\(error.message)")
        }
        #expect(!agent.log.contains("wrong-one"), "the password must not reach the agent's log")
    }
}
