import Foundation
import Testing
import TestSupport

/// `chebackup server:backup`, `server:restore` and `snapshots` as an administrator runs them,
/// against a files agent and the internal backup server.
@Suite struct ServerCommandTests {
    let bin = builtProduct("chebackup")

    struct Setup {
        let dir: TempDir
        let agent: AgentProcess
        let config: String
        var data: String { dir.file("che-data") }
        var objects: String { dir.file("objects") }
    }

    func setUp() throws -> Setup {
        let dir = TempDir()
        var gen = SeededBytes(seed: 51)
        try FileManager.default.createDirectory(atPath: dir.file("che-data/sub"), withIntermediateDirectories: true)
        try gen.data(600_000).write(to: URL(fileURLWithPath: dir.file("che-data/sub/blob")))
        try gen.text(300_000).write(to: URL(fileURLWithPath: dir.file("che-data/settings.json")))
        try FileManager.default.createDirectory(atPath: dir.file("objects"), withIntermediateDirectories: true)
        try "kind: CheCluster\n".write(toFile: dir.file("objects/checluster.yaml"), atomically: true, encoding: .utf8)
        let agent = try AgentProcess(role: "files", arguments: ["--dir", "che-data=\(dir.file("che-data"))"])
        guard case .tcp(_, let port) = agent.endpoint else { throw ConformanceFailure("tcp expected") }
        let config = """
            id: test
            namespace: eclipse-che
            domain: che.test
            cheVersion: 7.99.0
            objectsDir: \(dir.file("objects"))
            tokenFile: \(agent.dir.file("token"))
            stateDir: \(dir.file("state"))
            internalServer: {listen: "127.0.0.1:\(freeLoopbackPort())"}
            agents:
              - {role: files, address: "127.0.0.1:\(port)"}
            """
        try config.write(toFile: dir.file("chebackup.yaml"), atomically: true, encoding: .utf8)
        return Setup(dir: dir, agent: agent, config: dir.file("chebackup.yaml"))
    }

    func chebackup(_ setup: Setup, _ args: [String], stdin: Data? = nil) throws -> CommandResult {
        try run(bin, args, environment: ["CHEBACKUP_CONFIG": setup.config], stdin: stdin)
    }

    @Test func backupDeleteRestoreOnTheInternalServer() throws {
        let s = try setUp()
        defer { s.dir.remove() }
        let original = try Data(contentsOf: URL(fileURLWithPath: s.data + "/sub/blob"))
        let backup = try chebackup(s, ["server:backup"])
        #expect(backup.status == 0, "\(backup.stdout)\(backup.stderr)")
        for stage in ["Setting up the internal backup server", "Connecting to the backup repository", "Collecting Che installation data", "Sending the snapshot"] {
            #expect(backup.stdout.contains(stage), "missing stage \(stage)")
        }
        let id = try #require(backup.stdout.split(separator: "\n").first { $0.hasPrefix("Backup snapshot ID: ") }).dropFirst(20)
        #expect(id.count == 8)
        // The internal server's password is a secret on disk, readable by its owner only.
        let attributes = try FileManager.default.attributesOfItem(atPath: s.dir.file("state/default-server.json"))
        #expect((attributes[.posixPermissions] as? Int) == 0o600)

        let list = try chebackup(s, ["snapshots", "--json"])
        let rows = try #require(try JSONSerialization.jsonObject(with: list.stdoutData) as? [[String: Any]])
        #expect(rows.count == 1 && rows[0]["cheVersion"] as? String == "7.99.0" && rows[0]["namespace"] as? String == "eclipse-che")

        try FileManager.default.removeItem(atPath: s.data)
        try FileManager.default.removeItem(atPath: s.objects)
        let declined = try chebackup(s, ["server:restore"], stdin: Data("n\n".utf8))
        #expect(declined.status != 0 && declined.stderr.contains("restore cancelled"))
        #expect(!FileManager.default.fileExists(atPath: s.data))

        let restore = try chebackup(s, ["server:restore", "--batch", "-s", String(id.prefix(6))])
        #expect(restore.status == 0, "\(restore.stdout)\(restore.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: s.data + "/sub/blob")) == original)
        #expect(try String(contentsOfFile: s.objects + "/checluster.yaml", encoding: .utf8) == "kind: CheCluster\n")
    }

    @Test func badInputGivesOneClearLine() throws {
        let s = try setUp()
        defer { s.dir.remove() }
        let both = try chebackup(s, ["server:backup", "-r", "rest:http://127.0.0.1:1/x", "--backup-server-config-name", "cfg"])
        #expect(both.status != 0 && both.stderr.contains("cannot be used together"), "\(both.stderr)")
        let noConfig = try run(bin, ["server:backup", "--config", s.dir.file("missing.yaml")])
        #expect(noConfig.status != 0 && noConfig.stderr.contains("missing.yaml"), "\(noConfig.stderr)")
        try "objectsDir: /x\n".write(toFile: s.dir.file("bad.yaml"), atomically: true, encoding: .utf8)
        let badConfig = try run(bin, ["server:backup", "--config", s.dir.file("bad.yaml")])
        #expect(badConfig.status != 0 && badConfig.stderr.contains("missing \"agents\""), "\(badConfig.stderr)")

        _ = try chebackup(s, ["server:backup"])
        let unknown = try chebackup(s, ["server:restore", "--batch", "-s", "ffffffff"])
        #expect(unknown.status != 0 && unknown.stderr.contains("no snapshot with id ffffffff"), "\(unknown.stderr)")

        // An agent that is down: a clear error naming it, and no snapshot.
        s.agent.process.kill()
        let down = try chebackup(s, ["server:backup"])
        #expect(down.status != 0 && down.stderr.contains("cannot connect to the agent"), "\(down.stderr)")
        #expect(down.stderr.split(separator: "\n").count == 1, "\(down.stderr)")
        let list = try chebackup(s, ["snapshots", "--json"])
        #expect((try JSONSerialization.jsonObject(with: list.stdoutData) as? [[String: Any]])?.count == 1)
    }
}
