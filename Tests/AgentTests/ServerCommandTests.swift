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

    func setUp() async throws -> Setup {
        let dir = TempDir()
        var gen = SeededBytes(seed: 51)
        try FileManager.default.createDirectory(atPath: dir.file("che-data/sub"), withIntermediateDirectories: true)
        try gen.data(600_000).write(to: URL(fileURLWithPath: dir.file("che-data/sub/blob")))
        try gen.text(300_000).write(to: URL(fileURLWithPath: dir.file("che-data/settings.json")))
        try FileManager.default.createDirectory(atPath: dir.file("objects"), withIntermediateDirectories: true)
        try "kind: CheCluster\n".write(toFile: dir.file("objects/checluster.yaml"), atomically: true, encoding: .utf8)
        let agent = try await AgentProcess(role: "files", arguments: ["--dir", "che-data=\(dir.file("che-data"))"])
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

    func chebackup(_ setup: Setup, _ args: [String], stdin: Data? = nil) async throws -> CommandResult {
        try await runAsync(bin, args, environment: ["CHEBACKUP_CONFIG": setup.config], stdin: stdin)
    }

    @Test func backupDeleteRestoreOnTheInternalServer() async throws {
        let s = try await setUp()
        defer { s.dir.remove() }
        let original = try Data(contentsOf: URL(fileURLWithPath: s.data + "/sub/blob"))
        let backup = try await chebackup(s, ["server:backup"])
        #expect(backup.status == 0, "\(backup.stdout)\(backup.stderr)")
        for stage in ["Setting up the internal backup server", "Connecting to the backup repository", "Collecting Che installation data", "Sending the snapshot"] {
            #expect(backup.stdout.contains(stage), "missing stage \(stage)")
        }
        let id = try #require(backup.stdout.split(separator: "\n").first { $0.hasPrefix("Backup snapshot ID: ") }).dropFirst(20)
        #expect(id.count == 8)
        // The internal server's password is a secret on disk, readable by its owner only.
        let attributes = try FileManager.default.attributesOfItem(atPath: s.dir.file("state/resources/Secret/chebackup-internal.yaml"))
        #expect((attributes[.posixPermissions] as? Int) == 0o600)

        let list = try await chebackup(s, ["snapshots", "--json"])
        let rows = try #require(try JSONSerialization.jsonObject(with: list.stdoutData) as? [[String: Any]])
        #expect(rows.count == 1 && rows[0]["cheVersion"] as? String == "7.99.0" && rows[0]["namespace"] as? String == "eclipse-che")

        try FileManager.default.removeItem(atPath: s.data)
        try FileManager.default.removeItem(atPath: s.objects)
        let declined = try await chebackup(s, ["server:restore"], stdin: Data("n\n".utf8))
        #expect(declined.status != 0 && declined.stderr.contains("restore cancelled"))
        #expect(!FileManager.default.fileExists(atPath: s.data))

        let restore = try await chebackup(s, ["server:restore", "--batch", "-s", String(id.prefix(6))])
        #expect(restore.status == 0, "\(restore.stdout)\(restore.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: s.data + "/sub/blob")) == original)
        #expect(try String(contentsOfFile: s.objects + "/checluster.yaml", encoding: .utf8) == "kind: CheCluster\n")
    }

    /// `-r` makes a server the default only once it was reached and opened, and the default
    /// names a configuration whose Secrets hold the credentials: none in `default-server.json`.
    @Test(.enabled(if: TestServices.available(TestServices.s3URL)))
    func aServerBecomesTheDefaultOnlyOnceOpenedAndKeepsNoSecretOutsideSecrets() async throws {
        let s = try await setUp()
        defer { s.dir.remove() }
        let url = "\(TestServices.s3URL ?? "s3:http://127.0.0.1:1")/\(TestServices.unique("default"))"
        let keyID = TestServices.env["CHEBACKUP_TEST_S3_KEY_ID"] ?? ""
        let secret = TestServices.env["CHEBACKUP_TEST_S3_SECRET"] ?? ""
        let defaultFile = s.dir.file("state/default-server.json")
        let wrong = try await chebackup(s, ["server:backup", "-r", url, "-p", "s3-repo-password", "--aws-access-key-id", keyID,
                                      "--aws-secret-access-key", "not-the-secret"])
        #expect(wrong.status != 0, "\(wrong.stdout)")
        #expect(wrong.stderr.split(separator: "\n").count == 1, "\(wrong.stderr)")
        #expect(!FileManager.default.fileExists(atPath: defaultFile), "a server that refused us became the default")
        let onInternal = try await chebackup(s, ["server:backup"])
        #expect(onInternal.status == 0 && onInternal.stdout.contains("Setting up the internal backup server"), "\(onInternal.stdout)\(onInternal.stderr)")

        let right = try await chebackup(s, ["server:backup", "-r", url, "-p", "s3-repo-password", "--aws-access-key-id", keyID,
                                      "--aws-secret-access-key", secret])
        #expect(right.status == 0, "\(right.stdout)\(right.stderr)")
        let saved = try String(contentsOfFile: defaultFile, encoding: .utf8)
        #expect(saved.contains("chebackup-default") && !saved.contains(secret) && !saved.contains("s3-repo-password"), "\(saved)")
        // The passwords are in Secret files only (mode 0600), nowhere else in the state directory.
        let state = s.dir.file("state")
        for file in FileManager.default.enumerator(atPath: state)?.compactMap({ $0 as? String }) ?? [] {
            let path = state + "/" + file
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
            if text.contains(secret) || text.contains("s3-repo-password") {
                #expect(file.hasPrefix("resources/Secret/chebackup-default-"), "a secret in \(file)")
                #expect((try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) == 0o600)
            }
        }
        let again = try await chebackup(s, ["server:backup"])
        #expect(again.status == 0 && again.stdout.contains("Connecting to the backup repository s3:"), "\(again.stdout)\(again.stderr)")
        // A later wrong -r leaves the working default in place.
        let bad = try await chebackup(s, ["server:backup", "-r", "rest:http://127.0.0.1:1/nothing", "-p", "x"])
        #expect(bad.status != 0)
        #expect(try String(contentsOfFile: defaultFile, encoding: .utf8) == saved)
    }

    /// A default written by an older version (passwords inline) is moved into Secrets on first use.
    @Test func anOldDefaultWithInlinePasswordsIsMovedIntoSecrets() async throws {
        let s = try await setUp()
        defer { s.dir.remove() }
        let repo = s.dir.file("old-default-repo")
        let first = try await chebackup(s, ["server:backup", "-r", "local:" + repo, "-p", "local-repo-password"])
        #expect(first.status == 0, "\(first.stdout)\(first.stderr)")
        let defaultFile = s.dir.file("state/default-server.json")
        let legacy = "{\"isInternal\":false,\"secrets\":{\"repositoryPassword\":\"local-repo-password\"},\"url\":\"local:\(repo)\"}"
        try legacy.write(toFile: defaultFile, atomically: true, encoding: .utf8)
        let second = try await chebackup(s, ["server:backup"])
        #expect(second.status == 0, "\(second.stdout)\(second.stderr)")
        let saved = try String(contentsOfFile: defaultFile, encoding: .utf8)
        #expect(!saved.contains("local-repo-password") && saved.contains("chebackup-default-repo-password"), "\(saved)")
        let list = try await chebackup(s, ["snapshots", "--json"])
        #expect((try JSONSerialization.jsonObject(with: list.stdoutData) as? [[String: Any]])?.count == 2)
    }

    /// The internal server checks credentials: without them nothing can be read or deleted.
    @Test func theInternalServerNeedsItsCredentials() async throws {
        let s = try await setUp()
        defer { s.dir.remove() }
        #expect(try await chebackup(s, ["server:backup"]).status == 0)
        let config = try String(contentsOfFile: s.dir.file("state/resources/CheBackupServerConfiguration/chebackup-internal.yaml"), encoding: .utf8)
        #expect(config.contains("credentialsSecretRef: chebackup-internal-rest-credentials"), "\(config)")
        let htpasswd = try String(contentsOfFile: s.dir.file("state/backup-server.htpasswd"), encoding: .utf8)
        #expect(htpasswd.hasPrefix("chebackup:$2"), "bcrypt entries only")
        // The server the controller starts, started the same way: anonymous requests get 401.
        let port = freeLoopbackPort()
        let server = try ChildProcess(bin, ["rest-server", "--path", s.dir.file("state/backup-server"), "--listen", "127.0.0.1:\(port)",
                                            "--htpasswd", s.dir.file("state/backup-server.htpasswd")], log: s.dir.file("rs.log"))
        defer { server.kill() }
        #expect(await waitForPortAsync(port))
        let anonymous = try await runAsync("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(port)/che/config"])
        #expect(anonymous.stdout == "401", "\(anonymous.stdout)")
        let delete = try await runAsync("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "DELETE", "http://127.0.0.1:\(port)/che/config"])
        #expect(delete.stdout == "401", "\(delete.stdout)")
        // Its repository is still whole: a second backup and the list work.
        #expect(try await chebackup(s, ["server:backup"]).status == 0)
    }

    @Test func restoringIntoAnotherNamespaceNeedsRelocate() async throws {
        let s = try await setUp()
        defer { s.dir.remove() }
        try "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: che, namespace: eclipse-che}\ndata: {CHE_HOST: che.test, API: http://che-host.eclipse-che.svc:8080}\n"
            .write(toFile: s.objects + "/configmap.yaml", atomically: true, encoding: .utf8)
        #expect(try await chebackup(s, ["server:backup"]).status == 0)
        // The same installation, moved: another namespace and domain.
        let moved = try String(contentsOfFile: s.config, encoding: .utf8)
            .replacingOccurrences(of: "namespace: eclipse-che", with: "namespace: che-prod")
            .replacingOccurrences(of: "domain: che.test", with: "domain: che.prod.example")
        try moved.write(toFile: s.config, atomically: true, encoding: .utf8)
        let refused = try await chebackup(s, ["server:restore", "--batch"])
        #expect(refused.status != 0 && refused.stderr.contains("--relocate"), "\(refused.stderr)")
        let relocated = try await chebackup(s, ["server:restore", "--batch", "--relocate"])
        #expect(relocated.status == 0, "\(relocated.stdout)\(relocated.stderr)")
        let text = try String(contentsOfFile: s.objects + "/configmap.yaml", encoding: .utf8)
        #expect(text.contains("namespace: che-prod") && text.contains("CHE_HOST: che.prod.example") && text.contains("che-host.che-prod.svc"), "\(text)")
    }

    @Test func badInputGivesOneClearLine() async throws {
        let s = try await setUp()
        defer { s.dir.remove() }
        let both = try await chebackup(s, ["server:backup", "-r", "rest:http://127.0.0.1:1/x", "--backup-server-config-name", "cfg"])
        #expect(both.status != 0 && both.stderr.contains("cannot be used together"), "\(both.stderr)")
        let missingConfig = try await chebackup(s, ["server:backup", "--backup-server-config-name", "nope"])
        #expect(missingConfig.status != 0 && missingConfig.stderr.contains("CheBackupServerConfiguration nope not found"), "\(missingConfig.stderr)")
        let noConfig = try await runAsync(bin, ["server:backup", "--config", s.dir.file("missing.yaml")])
        #expect(noConfig.status != 0 && noConfig.stderr.contains("missing.yaml"), "\(noConfig.stderr)")
        try "objectsDir: /x\n".write(toFile: s.dir.file("bad.yaml"), atomically: true, encoding: .utf8)
        let badConfig = try await runAsync(bin, ["server:backup", "--config", s.dir.file("bad.yaml")])
        #expect(badConfig.status != 0 && badConfig.stderr.contains("missing \"agents\""), "\(badConfig.stderr)")

        _ = try await chebackup(s, ["server:backup"])
        let unknown = try await chebackup(s, ["server:restore", "--batch", "-s", "ffffffff"])
        #expect(unknown.status != 0 && unknown.stderr.contains("no snapshot with id ffffffff"), "\(unknown.stderr)")

        // A wrong repository password (the secret changed): Failed, with the reason.
        let secretPath = s.dir.file("state/resources/Secret/chebackup-internal.yaml")
        let original = try String(contentsOfFile: secretPath, encoding: .utf8)
        try original.replacingOccurrences(of: "repo-password: ", with: "repo-password: x")
            .write(toFile: secretPath, atomically: true, encoding: .utf8)
        let wrong = try await chebackup(s, ["server:restore", "--batch"])
        #expect(wrong.status != 0 && wrong.stderr.contains("wrong password") && wrong.stderr.contains("Failed"), "\(wrong.stderr)")
        try original.write(toFile: secretPath, atomically: true, encoding: .utf8)

        // An agent that is down: a clear error naming it, and no snapshot.
        s.agent.process.kill()
        let down = try await chebackup(s, ["server:backup"])
        #expect(down.status != 0 && down.stderr.contains("cannot connect to the agent"), "\(down.stderr)")
        #expect(down.stderr.split(separator: "\n").count == 1, "\(down.stderr)")
        let list = try await chebackup(s, ["snapshots", "--json"])
        #expect((try JSONSerialization.jsonObject(with: list.stdoutData) as? [[String: Any]])?.count == 1)
    }

    /// `controller --metrics-listen`: operations by kind and outcome, their duration, bytes read
    /// and stored, the repository's size and snapshot count, scraped and parsed.
    @Test func theControllerServesMetrics() async throws {
        let s = try await setUp()
        defer { s.dir.remove() }
        let metricsPort = freeLoopbackPort()
        var environment = ProcessInfo.processInfo.environment
        environment["CHEBACKUP_CONFIG"] = s.config
        let process = Process()
        process.executableURL = URL(fileURLWithPath: bin)
        process.arguments = ["controller", "--interval", "1", "--metrics-listen", "127.0.0.1:\(metricsPort)"]
        process.environment = environment
        let controller = try ChildProcess(launching: process, log: s.dir.file("controller.log"))
        defer { controller.kill() }
        #expect(await waitForPortAsync(metricsPort, seconds: 30))
        try """
            apiVersion: org.eclipse.che/v1
            kind: CheClusterBackup
            metadata: {name: measured}
            spec: {useInternalBackupServer: true}
            ---
            apiVersion: org.eclipse.che/v1
            kind: CheBackupServerConfiguration
            metadata: {name: broken}
            spec:
              rest: {protocol: http, hostname: 127.0.0.1, port: 1, repositoryPath: che, repositoryPasswordSecretRef: missing}
            ---
            apiVersion: org.eclipse.che/v1
            kind: CheClusterBackup
            metadata: {name: fails}
            spec: {backupServerConfigRef: broken}
            """.write(toFile: s.dir.file("ops.yaml"), atomically: true, encoding: .utf8)
        #expect(try await chebackup(s, ["apply", "-f", s.dir.file("ops.yaml")]).status == 0)
        var metrics = try ScrapedMetrics(parsing: "")
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            let scrape = try await runAsync(try #require(which("curl")), ["-s", "http://127.0.0.1:\(metricsPort)/metrics"])
            metrics = try ScrapedMetrics(parsing: scrape.stdout)
            if metrics.value("chebackup_operations_total", ["kind": "backup", "outcome": "succeeded"]) != nil,
               metrics.value("chebackup_operations_total", ["kind": "backup", "outcome": "failed"]) != nil { break }
            try await Task.sleep(for: .milliseconds(500))
        }
        #expect(metrics.value("chebackup_operations_total", ["kind": "backup", "outcome": "succeeded"]) == 1, "\(metrics.samples)")
        #expect(metrics.value("chebackup_operations_total", ["kind": "backup", "outcome": "failed"]) == 1)
        #expect(metrics.value("chebackup_operation_duration_seconds_count", ["kind": "backup"]) == 2)
        #expect((metrics.value("chebackup_operation_duration_seconds_sum", ["kind": "backup"]) ?? 0) > 0)
        #expect((metrics.value("chebackup_read_bytes_total") ?? 0) >= 900_000, "the data directory is about 900 kB")
        #expect((metrics.value("chebackup_stored_bytes_total") ?? 0) > 0)
        #expect(metrics.value("chebackup_repository_snapshots") == 1)
        #expect((metrics.value("chebackup_repository_size_bytes") ?? 0) > 0)
        let repository = metrics.samples.first { $0.name == "chebackup_repository_size_bytes" }?.labels["repository"] ?? ""
        #expect(repository.hasPrefix("rest:http://127.0.0.1:") && !repository.contains("@"), "no credentials in labels: \(repository)")
    }

    /// Che's version goes up: the controller first backs up (backup-before-update-to-<version>,
    /// tagged), once; `server:restore --rollback` restores that snapshot, not the latest.
    @Test func aBackupBeforeAnUpdateAndARollback() async throws {
        let s = try await setUp()
        defer { s.dir.remove() }
        func snapshots() async throws -> [[String: Any]] {
            let r = try await chebackup(s, ["snapshots", "--json"])
            return try JSONSerialization.jsonObject(with: r.stdoutData) as? [[String: Any]] ?? []
        }
        let none = try await chebackup(s, ["server:restore", "--rollback", "--batch"])
        #expect(none.status != 0, "\(none.stdout)")
        let first = try await chebackup(s, ["server:backup"])
        #expect(first.status == 0, "\(first.stderr)")
        #expect(try await chebackup(s, ["controller", "--once"]).status == 0)
        #expect(try await snapshots().count == 1, "no update yet: no backup")
        let noTagged = try await chebackup(s, ["server:restore", "--rollback", "--batch"])
        #expect(noTagged.status != 0 && noTagged.stderr.contains("nothing to roll back to"), "\(noTagged.stderr)")

        // Che is updated to 8.0.0.
        let config = try String(contentsOfFile: s.config, encoding: .utf8)
        try config.replacingOccurrences(of: "cheVersion: 7.99.0", with: "cheVersion: 8.0.0").write(toFile: s.config, atomically: true, encoding: .utf8)
        let pass = try await chebackup(s, ["controller", "--once"])
        #expect(pass.status == 0, "\(pass.stderr)")
        let get = try await chebackup(s, ["get", "checlusterbackup", "backup-before-update-to-8-0-0", "-o", "json"])
        let backup = try #require(try JSONSerialization.jsonObject(with: get.stdoutData) as? [String: Any], "\(get.stdout)\(get.stderr)")
        let status = try #require(backup["status"] as? [String: Any])
        #expect(status["state"] as? String == "Succeeded", "\(status)")
        let tagged = try #require(status["snapshotId"] as? String)
        var all = try await snapshots()
        #expect(all.count == 2)
        #expect((all.first { ($0["id"] as? String)?.hasPrefix(tagged) == true }?["tags"] as? [String])?.contains("backup-before-update") == true, "\(all)")
        // Once per version.
        #expect(try await chebackup(s, ["controller", "--once"]).status == 0)
        #expect(try await snapshots().count == 2)

        // Later backups; then the rollback takes the tagged one.
        let later = try await chebackup(s, ["server:backup"])
        #expect(later.status == 0)
        all = try await snapshots()
        #expect(all.count == 3)
        let bad = try await chebackup(s, ["server:restore", "--rollback", "-s", "abcd1234"])
        #expect(bad.status != 0 && bad.stderr.contains("--rollback picks the snapshot itself"))
        let rollback = try await chebackup(s, ["server:restore", "--rollback", "--batch"])
        #expect(rollback.status == 0, "\(rollback.stderr)")
        #expect(rollback.stdout.contains("Snapshot \(tagged.prefix(8))") && rollback.stdout.contains("Restore of \(tagged.prefix(8))"), "\(rollback.stdout)")
        #expect(FileManager.default.fileExists(atPath: s.data + "/sub/blob"))
    }

    /// A schedule due every minute with keepLast 1: at the next minute the controller makes the
    /// backup, then forgets and prunes the older snapshots, and records it all in the status.
    @Test func aScheduledBackupThenItsRetention() async throws {
        let s = try await setUp()
        defer { s.dir.remove() }
        for _ in 0..<2 {
            let r = try await chebackup(s, ["server:backup"])
            #expect(r.status == 0, "\(r.stderr)")
        }
        func snapshots() async throws -> [[String: Any]] {
            let r = try await chebackup(s, ["snapshots", "--json"])
            return try JSONSerialization.jsonObject(with: r.stdoutData) as? [[String: Any]] ?? []
        }
        #expect(try await snapshots().count == 2)
        try """
            apiVersion: org.eclipse.che/v1
            kind: CheClusterBackupSchedule
            metadata: {name: every-minute}
            spec:
              schedule: "* * * * *"
              useInternalBackupServer: true
              retention: {keepLast: 1}
              successfulBackupsHistoryLimit: 1
            """.write(toFile: s.dir.file("schedule.yaml"), atomically: true, encoding: .utf8)
        let applied = try await chebackup(s, ["apply", "-f", s.dir.file("schedule.yaml")])
        #expect(applied.status == 0 && applied.stdout.contains("checlusterbackupschedule/every-minute created"), "\(applied.stdout)\(applied.stderr)")
        // Wait for the next minute to begin (a liveness wait, at most a minute).
        let seconds = 60 - Calendar(identifier: .gregorian).component(.second, from: Date())
        try await Task.sleep(for: .seconds(seconds + 1))
        let pass = try await chebackup(s, ["controller", "--once"])
        #expect(pass.status == 0, "\(pass.stderr)")
        let get = try await chebackup(s, ["get", "checlusterbackupschedule", "every-minute", "-o", "json"])
        let schedule = try #require(try JSONSerialization.jsonObject(with: get.stdoutData) as? [String: Any], "\(get.stdout)\(get.stderr)")
        let status = try #require(schedule["status"] as? [String: Any])
        let conditions = status["conditions"] as? [[String: Any]] ?? []
        let retention = try #require(conditions.first { $0["type"] as? String == "Retention" }, "\(status)")
        #expect(retention["status"] as? String == "True" && (retention["message"] as? String)?.contains("kept 1, removed 2") == true, "\(retention)")
        #expect(conditions.first { $0["type"] as? String == "LastBackup" }?["status"] as? String == "True")
        #expect(status["lastSuccessfulTime"] != nil && status["nextScheduleTime"] != nil)
        let left = try await snapshots()
        #expect(left.count == 1, "\(left)")
        #expect((left.first?["id"] as? String)?.hasPrefix(status["lastSnapshotId"] as? String ?? "-") == true, "the scheduled one is kept")
        // The backup resource it made carries the schedule's label.
        let backups = try await chebackup(s, ["get", "checlusterbackup", "-o", "json"])
        let list = try JSONSerialization.jsonObject(with: backups.stdoutData) as? [[String: Any]] ?? []
        let made = list.filter { (($0["metadata"] as? [String: Any])?["labels"] as? [String: String])?["chebackup.eclipse.org/schedule"] == "every-minute" }
        #expect(made.count == 1, "\(backups.stdout)")
        #expect((made.first?["status"] as? [String: Any])?["snapshotId"] as? String == status["lastSnapshotId"] as? String)
    }

    @Test func customResourcesThroughTheController() async throws {
        let s = try await setUp()
        defer { s.dir.remove() }
        func apply(_ yaml: String) async throws -> CommandResult {
            let file = s.dir.file("r-\(UUID().uuidString).yaml")
            try yaml.write(toFile: file, atomically: true, encoding: .utf8)
            return try await chebackup(s, ["apply", "-f", file])
        }
        func status(_ kind: String, _ name: String) async throws -> [String: Any] {
            let r = try await chebackup(s, ["get", kind, name, "-o", "json"])
            let object = try #require(try JSONSerialization.jsonObject(with: r.stdoutData) as? [String: Any], "\(r.stdout)\(r.stderr)")
            return object["status"] as? [String: Any] ?? [:]
        }
        // A configuration with two backends is refused.
        let two = try await apply("""
            apiVersion: org.eclipse.che/v1
            kind: CheBackupServerConfiguration
            metadata: {name: two}
            spec:
              rest: {hostname: a, repositoryPath: x, repositoryPasswordSecretRef: s}
              sftp: {username: u, hostname: b, repositoryPath: y, repositoryPasswordSecretRef: s, sshKeySecretRef: k}
            """)
        #expect(two.status != 0 && two.stderr.contains("exactly one of rest, awss3, sftp"), "\(two.stderr)")

        // A backup on the internal server, run by the controller.
        #expect(try await apply("""
            apiVersion: org.eclipse.che/v1
            kind: CheClusterBackup
            metadata: {name: nightly}
            spec: {useInternalBackupServer: true}
            """).status == 0)
        #expect(try await status("CheClusterBackup", "nightly").isEmpty, "only the controller starts work")
        let pass = try await chebackup(s, ["controller", "--once"])
        #expect(pass.status == 0, "\(pass.stderr)")
        let done = try await status("CheClusterBackup", "nightly")
        #expect(done["state"] as? String == "Succeeded", "\(done)")
        #expect((done["snapshotId"] as? String)?.count == 8 && done["cheVersion"] as? String == "7.99.0")
        #expect((done["message"] as? String)?.contains("finished at") == true)
        let again = try await apply("apiVersion: org.eclipse.che/v1\nkind: CheClusterBackup\nmetadata: {name: nightly}\nspec: {useInternalBackupServer: true}\n")
        #expect(again.stdout.contains("unchanged"))

        // Workspace claims need a cluster: asked for here, the backup fails before it starts.
        #expect(try await apply("apiVersion: org.eclipse.che/v1\nkind: CheClusterBackup\nmetadata: {name: with-workspaces}\nspec: {useInternalBackupServer: true, includeWorkspaces: true}\n").status == 0)
        _ = try await chebackup(s, ["controller", "--once"])
        let noWorkspaces = try await status("CheClusterBackup", "with-workspaces")
        #expect(noWorkspaces["state"] as? String == "Failed")
        #expect((noWorkspaces["message"] as? String)?.contains("includeWorkspaces: workspace claims live in the users' namespaces of a cluster") == true, "\(noWorkspaces)")

        // A configuration whose secret is missing: the backup fails, saying so.
        #expect(try await apply("""
            apiVersion: org.eclipse.che/v1
            kind: CheBackupServerConfiguration
            metadata: {name: remote}
            spec:
              rest: {protocol: http, hostname: 127.0.0.1, port: 1, repositoryPath: che, repositoryPasswordSecretRef: remote-secret}
            ---
            apiVersion: org.eclipse.che/v1
            kind: CheClusterBackup
            metadata: {name: to-remote}
            spec: {backupServerConfigRef: remote}
            """).status == 0)
        _ = try await chebackup(s, ["controller", "--once"])
        let failed = try await status("CheClusterBackup", "to-remote")
        #expect(failed["state"] as? String == "Failed")
        #expect((failed["message"] as? String)?.contains("secret remote-secret") == true, "\(failed)")

        // A restore of the nightly snapshot.
        try FileManager.default.removeItem(atPath: s.data)
        #expect(try await apply("apiVersion: org.eclipse.che/v1\nkind: CheClusterRestore\nmetadata: {name: back}\nspec: {snapshotId: \(done["snapshotId"] as? String ?? ""), backupServerConfigRef: chebackup-internal}\n").status == 0)
        _ = try await chebackup(s, ["controller", "--once"])
        #expect(try await status("CheClusterRestore", "back")["state"] as? String == "Succeeded")
        #expect(FileManager.default.fileExists(atPath: s.data + "/sub/blob"))

        // An operation a dead controller left InProgress is marked Failed, never left hanging.
        try """
            apiVersion: org.eclipse.che/v1
            kind: CheClusterRestore
            metadata: {name: interrupted}
            spec: {}
            status: {state: InProgress, stage: Restoring databases and data}
            """.write(toFile: s.dir.file("state/resources/CheClusterRestore/interrupted.yaml"), atomically: true, encoding: .utf8)
        _ = try await chebackup(s, ["controller", "--once"])
        let interrupted = try await status("CheClusterRestore", "interrupted")
        #expect(interrupted["state"] as? String == "Failed")
        #expect((interrupted["message"] as? String)?.contains("partly restored") == true, "\(interrupted)")

        // Secrets are never printed.
        let secrets = try await chebackup(s, ["get", "secret"])
        #expect(secrets.stdout.contains("chebackup-internal") && secrets.stdout.contains("repo-password"))
        let raw = try String(contentsOfFile: s.dir.file("state/resources/Secret/chebackup-internal.yaml"), encoding: .utf8)
        let password = raw.split(separator: ":").last.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) } ?? "?"
        #expect(!secrets.stdout.contains(password))
    }
}
