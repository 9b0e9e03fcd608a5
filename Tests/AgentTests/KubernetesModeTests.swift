import Foundation
import KubernetesAPI
import Testing
import TestSupport

extension ClusterSuites {
    /// `chebackup controller --kubernetes` as an operator, against the API server stand-in and the
    /// real kubectl, with real agents, a real PostgreSQL and a real backup server.
    @Suite(.serialized) struct KubernetesModeTests {
        @Test func backupDeleteRestoreThroughKubectl() async throws {
            let c = try await ClusterFixture()
            try c.startController("a")
            let expectedDB = try await c.pg.checksum()
            let blob = try Data(contentsOf: URL(fileURLWithPath: c.data + "/sub/blob"))
            let configMap = try #require(try await c.api.get(["configmap", "che"])?["data"] as? [String: String])

            try await c.api.apply(c.backupYAML("nightly"))
            let done = try await c.waitForState("checlusterbackup", "nightly")
            #expect(done["state"] as? String == "Succeeded", "\(done)\n\(c.controllerLog("a"))")
            let snapshot = try #require(done["snapshotId"] as? String)
            #expect(snapshot.count == 8 && done["cheVersion"] as? String == "7.99.0")
            #expect((done["message"] as? String)?.contains("finished at") == true)
            #expect(done["observedGeneration"] as? Int == 1)
            // kubectl wait sees it too, and the status went through /status with a resourceVersion.
            let wait = try await c.api.kubectl(["wait", "--for=jsonpath={.status.state}=Succeeded", "checlusterbackup/nightly", "--timeout=10s"])
            #expect(wait.status == 0, "\(wait.stderr)")
            let writes = try await c.api.requests().filter { ($0["path"]?.string ?? "").contains("checlusterbackups/nightly") && $0["method"]?.string != "GET" }
            #expect(!writes.isEmpty && writes.allSatisfy { ($0["path"]?.string ?? "").contains("/status") }, "\(writes)")
            #expect(try await c.eventReasons("nightly") == ["BackupStarted", "BackupSucceeded"])

            // Delete everything: the objects, the databases, the files.
            for object in ["configmap/che", "secret/che-db", "checluster/eclipse-che"] {
                #expect(try await c.api.kubectl(["delete", object]).status == 0)
            }
            for db in ["dbche", "keycloak"] { _ = try await c.pg.psql("DROP DATABASE \(db) WITH (FORCE)") }
            try FileManager.default.removeItem(atPath: c.data)

            try await c.api.apply(c.restoreYAML("back", config: "rest-server"))
            let restored = try await c.waitForState("checlusterrestore", "back")
            #expect(restored["state"] as? String == "Succeeded", "\(restored)\n\(c.controllerLog("a"))")
            #expect(restored["snapshotId"] as? String == snapshot)
            #expect(try await c.pg.checksum() == expectedDB)
            #expect(try Data(contentsOf: URL(fileURLWithPath: c.data + "/sub/blob")) == blob)
            #expect(try await c.api.get(["configmap", "che"])?["data"] as? [String: String] == configMap)
            let secret = try #require(try await c.api.get(["secret", "che-db"]))
            #expect((secret["data"] as? [String: String])?["password"] == "Y2hlLXBhc3N3b3Jk")
            let che = try #require(try await c.api.get(["checluster", "eclipse-che"]))
            #expect(((che["spec"] as? [String: Any])?["networking"] as? [String: Any])?["domain"] as? String == "che.cluster.test")
            #expect(che["status"] == nil || (che["status"] as? [String: Any])?.isEmpty == true, "status reset: \(che)")
            // Che's server was stopped during the restore and is back.
            // Che's server was scaled to 0 for the restore and back to 1 (the API server's request log).
            let scales = try await c.api.requests().filter { ($0["path"]?.string ?? "").contains("deployments/che/scale") && $0["method"]?.string != "GET" }
                .compactMap { $0[path: "body", "spec", "replicas"]?.int }
            #expect(scales == [0, 1], "\(scales)")
            let deployment = try #require(try await c.api.get(["deployment", "che"]))
            #expect((deployment["spec"] as? [String: Any])?["replicas"] as? Int == 1, "scaled back: \(deployment)")
            #expect(try await c.eventReasons("back") == ["RestoreStarted", "RestoreSucceeded"])

            // chectl's way from outside the cluster: the flags' server becomes chectl's configuration.
            let cli = try await runAsync(builtProduct("chebackup"), ["server:backup", "--kubeconfig", c.api.kubeconfigPath, "-n", c.namespace,
                                                          "-r", "rest:http://127.0.0.1:\(c.backupServerPort)/che", "-p", "cluster-repo-pw"])
            #expect(cli.status == 0, "\(cli.stdout)\(cli.stderr)")
            #expect(cli.stdout.contains("Backing up") && cli.stdout.contains("Backup snapshot ID: "), "\(cli.stdout)")
            #expect(!cli.stdout.contains("cluster-repo-pw") && !cli.stderr.contains("cluster-repo-pw"))
            let chectlConfig = try #require(try await c.api.get(["chebackupserverconfiguration", "eclipse-che-backup-server-config"]))
            #expect(((chectlConfig["spec"] as? [String: Any])?["rest"] as? [String: Any])?["repositoryPasswordSecretRef"] as? String == "chectl-backup-repo-password")
            let again = try await runAsync(builtProduct("chebackup"), ["server:backup", "--kubeconfig", c.api.kubeconfigPath, "-n", c.namespace,
                                                            "--backup-server-config-name", "rest-server"])
            #expect(again.status == 0 && again.stdout.contains("Deleted the previous CheClusterBackup eclipse-che-backup"), "\(again.stdout)\(again.stderr)")
            #expect(try await c.snapshotCount() == 3)
            let cliRestore = try await runAsync(builtProduct("chebackup"), ["server:restore", "--kubeconfig", c.api.kubeconfigPath, "-n", c.namespace,
                                                                 "--batch", "--backup-server-config-name", "rest-server"])
            #expect(cliRestore.status == 0 && cliRestore.stdout.contains("Restoring databases and data"), "\(cliRestore.stdout)\(cliRestore.stderr)")
            #expect(try await c.pg.checksum() == expectedDB)
        }

        @Test func operationsSurviveBrokenWatchesConflictsAndARestartedAPIServer() async throws {
            let c = try await ClusterFixture(filesPreHook: "sleep 2")
            try c.startController("a")
            try await c.api.apply(c.backupYAML("first"))
            _ = try await c.waitForState("checlusterbackup", "first", ["InProgress"])
            try await c.api.hook("/_fault/break-watches")
            try await c.api.hook("/_fault/conflict?plural=checlusterbackups&count=2")
            let first = try await c.waitForState("checlusterbackup", "first")
            #expect(first["state"] as? String == "Succeeded", "\(first)\n\(c.controllerLog("a"))")

            // History gone (410) and the API server restarted while the controller watches.
            try await c.api.hook("/_fault/compact")
            try await c.api.hook("/_fault/break-watches")
            try await c.api.restart()
            try await c.api.apply(c.backupYAML("second"))
            let second = try await c.waitForState("checlusterbackup", "second")
            #expect(second["state"] as? String == "Succeeded", "\(second)\n\(c.controllerLog("a"))")
            c.api.stop()
            try await Task.sleep(for: .seconds(1))
            try await c.api.start()
            try await c.api.apply(c.backupYAML("third"))
            let third = try await c.waitForState("checlusterbackup", "third")
            #expect(third["state"] as? String == "Succeeded", "\(third)\n\(c.controllerLog("a"))")
            // Each ran once: one start event each, one snapshot each.
            for name in ["first", "second", "third"] {
                let reasons = try await c.eventReasons(name)
                #expect(reasons.filter { $0 == "BackupStarted" }.count == 1, "\(name): \(reasons)")
            }
            #expect(try await c.snapshotCount() == 3)
        }

        @Test func twoControllersOneLeaderAndATakeover() async throws {
            let c = try await ClusterFixture(filesPreHook: "sleep 3")
            try c.startController("a")
            try await Task.sleep(for: .seconds(1))
            try c.startController("b")
            try await c.api.apply(c.backupYAML("one"))
            let one = try await c.waitForState("checlusterbackup", "one")
            #expect(one["state"] as? String == "Succeeded")
            #expect(try await c.eventReasons("one").filter { $0 == "BackupStarted" }.count == 1)
            #expect(try await c.snapshotCount() == 1)
            let holder = try #require(((try await c.api.get(["lease", "che-backup-controller"]))?["spec"] as? [String: Any])?["holderIdentity"] as? String)
            #expect(holder == "a", "the first controller leads")

            // The leader dies mid-operation: the other takes over and marks it Failed.
            try await c.api.apply(c.backupYAML("two"))
            _ = try await c.waitForState("checlusterbackup", "two", ["InProgress"])
            c.controllers["a"]?.kill()
            let two = try await c.waitForState("checlusterbackup", "two", seconds: 60)
            #expect(two["state"] as? String == "Failed", "\(two)")
            #expect((two["message"] as? String)?.contains("the controller stopped during") == true, "\(two)")
            let newHolder = ((try await c.api.get(["lease", "che-backup-controller"]))?["spec"] as? [String: Any])?["holderIdentity"] as? String
            #expect(newHolder == "b")
            // The new leader runs new work.
            try await c.api.apply(c.backupYAML("three"))
            #expect(try await c.waitForState("checlusterbackup", "three")["state"] as? String == "Succeeded")
            #expect(try await c.snapshotCount() == 2, "no snapshot from the interrupted backup")
        }

        @Test func badInputFailsNamingTheProblem() async throws {
            let c = try await ClusterFixture()
            try c.startController("a")
            try await c.api.apply(c.backupYAML("good"))
            let good = try await c.waitForState("checlusterbackup", "good")
            #expect(good["state"] as? String == "Succeeded")

            func failure(_ yaml: String, _ kind: String, _ name: String) async throws -> String {
                try await c.api.apply(yaml)
                let status = try await c.waitForState(kind, name)
                #expect(status["state"] as? String == "Failed", "\(name): \(status)")
                return status["message"] as? String ?? ""
            }
            let two = try await failure("""
                apiVersion: org.eclipse.che/v1
                kind: CheBackupServerConfiguration
                metadata: {name: two}
                spec:
                  rest: {hostname: a, repositoryPath: "x", repositoryPasswordSecretRef: s}
                  sftp: {username: u, hostname: b, repositoryPath: "y", repositoryPasswordSecretRef: s, sshKeySecretRef: k}
                ---
                \(c.backupYAML("to-two", config: "two"))
                """, "checlusterbackup", "to-two")
            #expect(two.contains("exactly one of rest, awss3, sftp"), "\(two)")
            let missing = try await failure("""
                apiVersion: org.eclipse.che/v1
                kind: CheBackupServerConfiguration
                metadata: {name: nosecret}
                spec: {rest: {protocol: http, hostname: 127.0.0.1, port: \(c.backupServerPort), repositoryPath: che, repositoryPasswordSecretRef: absent}}
                ---
                \(c.backupYAML("to-nosecret", config: "nosecret"))
                """, "checlusterbackup", "to-nosecret")
            #expect(missing.contains("secret absent") && missing.contains("not found"), "\(missing)")
            let noKey = try await failure("""
                apiVersion: v1
                kind: Secret
                metadata: {name: wrongkey}
                stringData: {password: x}
                ---
                apiVersion: org.eclipse.che/v1
                kind: CheBackupServerConfiguration
                metadata: {name: nokey}
                spec: {rest: {protocol: http, hostname: 127.0.0.1, port: \(c.backupServerPort), repositoryPath: che, repositoryPasswordSecretRef: wrongkey}}
                ---
                \(c.backupYAML("to-nokey", config: "nokey"))
                """, "checlusterbackup", "to-nokey")
            #expect(noKey.contains("secret wrongkey has no key \"repo-password\""), "\(noKey)")
            let unknown = try await failure(c.restoreYAML("unknown", snapshot: "ffffffff", config: "rest-server"), "checlusterrestore", "unknown")
            #expect(unknown.contains("no snapshot with id ffffffff"), "\(unknown)")
            // With several configurations, one must be named.
            let ambiguous = try await failure(c.restoreYAML("ambiguous"), "checlusterrestore", "ambiguous")
            #expect(ambiguous.contains("name one with backupServerConfigRef"), "\(ambiguous)")

            // An agent pod that is not Ready, then none at all.
            #expect(try await c.api.kubectl(["delete", "pod", "files-agent"]).status == 0)
            try await c.addAgentPod("files", port: c.agentPort(c.filesAgent), ready: false)
            let notReady = try await failure(c.backupYAML("not-ready"), "checlusterbackup", "not-ready")
            #expect(notReady.contains("files agent pod files-agent") && notReady.contains("not Ready"), "\(notReady)")
            #expect(try await c.api.kubectl(["delete", "pod", "files-agent"]).status == 0)
            let noAgent = try await failure(c.backupYAML("no-agent"), "checlusterbackup", "no-agent")
            #expect(noAgent.contains("no files agent"), "\(noAgent)")
            #expect(try await c.snapshotCount() == 1, "nothing stored was lost, nothing partial was added")

            // Che that does not come back after a restore: Failed, saying so, once the time is up.
            try await c.addAgentPod("files", port: c.agentPort(c.filesAgent))
            c.controllers["a"]?.kill()
            c.playDeployments.withLock { $0 = false }
            try c.startController("b", cheReadyTimeout: "3s")
            let late = try await failure(c.restoreYAML("late", snapshot: good["snapshotId"] as? String, config: "rest-server"), "checlusterrestore", "late")
            #expect(late.contains("the Che server Deployment che did not become Available within 3 seconds"), "\(late)")

            // A kubeconfig with a wrong token: one clear line, non-zero exit.
            let text = try String(contentsOfFile: c.api.kubeconfigPath, encoding: .utf8)
            try text.replacingOccurrences(of: c.api.token!, with: "wrong-token").write(toFile: c.dir.file("wrong-token.kubeconfig"), atomically: true, encoding: .utf8)
            let refused = try await runAsync(builtProduct("chebackup"), ["controller", "--kubeconfig", c.dir.file("wrong-token.kubeconfig"), "--once"])
            #expect(refused.status != 0 && refused.stderr.contains("401"), "\(refused.stderr)")
            #expect(refused.stderr.split(separator: "\n").count == 1 && !refused.stderr.contains("wrong-token"), "\(refused.stderr)")
        }

        @Test func aKubeconfigWithAWrongCAIsRefused() async throws {
            let api = try await KubeAPIServer(tls: true)
            let other = try await KubeAPIServer(tls: true)
            let good = try await runAsync(builtProduct("chebackup"), ["snapshots", "--kubeconfig", api.kubeconfigPath, "--backup-server-config-name", "x"])
            #expect(good.stderr.contains("CheBackupServerConfiguration x not found"), "TLS verified against the right CA: \(good.stderr)")
            // The other server's CA does not vouch for this server's certificate.
            let text = try String(contentsOfFile: api.kubeconfigPath, encoding: .utf8)
            let otherText = try String(contentsOfFile: other.kubeconfigPath, encoding: .utf8)
            func ca(_ t: String) -> String? {
                t.split(separator: "\n").first { $0.contains("certificate-authority") }.map(String.init)
            }
            let mixed = text.replacingOccurrences(of: try #require(ca(text)), with: try #require(ca(otherText)))
            try mixed.write(toFile: api.dir.file("wrong-ca.kubeconfig"), atomically: true, encoding: .utf8)
            let refused = try await runAsync(builtProduct("chebackup"), ["controller", "--kubeconfig", api.dir.file("wrong-ca.kubeconfig"), "--once"])
            #expect(refused.status != 0 && refused.stderr.split(separator: "\n").count == 1, "\(refused.stderr)")
            #expect(refused.stderr.lowercased().contains("certificate") || refused.stderr.lowercased().contains("tls"), "\(refused.stderr)")
        }
    }
}
