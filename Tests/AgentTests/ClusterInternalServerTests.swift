import Foundation
import KubernetesAPI
import Testing
import TestSupport

extension ClusterSuites {
    /// With `useInternalBackupServer: true` the controller makes the internal backup server itself
    /// (Deployment, Service, PVC, configuration, Secrets), waits until it is Available, and reuses
    /// all of it later. The test plays the Deployment controller and the kubelet: when the
    /// Deployment appears it runs its `chebackup rest-server` locally with the Secret's htpasswd.
    @Suite(.serialized) struct ClusterInternalServerTests {
        /// Plays the internal server's Deployment: runs the rest-server it describes, then reports it Available.
        final class PlayedServer: @unchecked Sendable {
            let port = freeLoopbackPort()
            let c: ClusterFixture
            var process: ChildProcess?
            var storage: String { c.dir.file("internal-server-data") }

            init(_ c: ClusterFixture) { self.c = c }

            func run(seconds: Double = 60) async throws {
                let deadline = Date().addingTimeInterval(seconds)
                while Date() < deadline {
                    if let deployment = try await c.client.getIfPresent(.deployments, "chebackup-internal-server"),
                       let secret = try await c.client.getIfPresent(.secrets, "chebackup-internal-rest-credentials"),
                       let htpasswd = secret[path: "data", "htpasswd"]?.string.flatMap({ Data(base64Encoded: $0) }) {
                        let command = deployment[path: "spec", "template", "spec", "containers"]?[0]?["command"]
                        #expect(command == ["chebackup", "rest-server", "--path", "/data", "--listen", ":8000", "--htpasswd", "/etc/chebackup-rest/htpasswd"])
                        try FileManager.default.createDirectory(atPath: storage, withIntermediateDirectories: true)
                        try htpasswd.write(to: URL(fileURLWithPath: c.dir.file("internal.htpasswd")))
                        process = try ChildProcess(builtProduct("chebackup"), ["rest-server", "--path", storage, "--listen", "127.0.0.1:\(port)",
                                                                               "--htpasswd", c.dir.file("internal.htpasswd")], log: c.dir.file("internal-server.log"))
                        guard await waitForPortAsync(port) else { throw ConformanceFailure("the internal rest-server did not start") }
                        let generation = deployment.generation ?? 1
                        _ = try await c.client.updateStatus(.deployments, "chebackup-internal-server") { object in
                            object["status"] = ["observedGeneration": .int(generation), "replicas": 1, "availableReplicas": 1,
                                                "conditions": [["type": "Available", "status": "True"]]]
                        }
                        return
                    }
                    try await Task.sleep(for: .milliseconds(200))
                }
                throw ConformanceFailure("the controller made no internal server Deployment in \(seconds) s:\n\(c.controllerLog("a"))")
            }

            deinit { process?.kill() }
        }

        static func internalBackup(_ name: String) -> String {
            "apiVersion: org.eclipse.che/v1\nkind: CheClusterBackup\nmetadata: {name: \(name)}\nspec: {useInternalBackupServer: true}\n"
        }

        @Test func theControllerMakesTheInternalServerAndReusesIt() async throws {
            let c = try await ClusterFixture()
            let server = PlayedServer(c)
            let controllerFlags = ["--internal-server-address", "127.0.0.1:\(server.port)", "--internal-server-image", "registry.example/chebackup:9",
                                   "--internal-server-storage", "3Gi", "--internal-server-ready-timeout", "90s"]
            try c.startController("a", extra: controllerFlags)
            try await c.api.apply(Self.internalBackup("first"))
            try await server.run()
            let first = try await c.waitForState("checlusterbackup", "first")
            #expect(first["state"] as? String == "Succeeded", "\(first)\n\(c.controllerLog("a"))")

            // What the controller made, all labelled as ours.
            let deployment = try await c.client.get(.deployments, "chebackup-internal-server")
            let pod = try #require(deployment[path: "spec", "template", "spec"])
            #expect(pod["containers"]?[0]?["image"]?.string == "registry.example/chebackup:9")
            #expect(pod[path: "securityContext", "runAsNonRoot"]?.bool == true)
            #expect(pod["volumes"]?[0]?[path: "persistentVolumeClaim", "claimName"]?.string == "chebackup-internal-server")
            #expect(pod["volumes"]?[1]?[path: "secret", "secretName"]?.string == "chebackup-internal-rest-credentials")
            let claim = try await c.client.get(.persistentVolumeClaims, "chebackup-internal-server")
            #expect(claim[path: "spec", "resources", "requests", "storage"]?.string == "3Gi")
            let service = try await c.client.get(.services, "chebackup-internal-server")
            #expect(service[path: "spec", "ports"]?[0]?["port"]?.int == 8000)
            let configuration = try await c.client.get(.backupServerConfigurations, "chebackup-internal")
            #expect(configuration[path: "spec", "rest", "hostname"]?.string == "127.0.0.1")
            #expect(configuration[path: "spec", "rest", "port"]?.int == Int64(server.port))
            #expect(configuration[path: "spec", "rest", "credentialsSecretRef"]?.string == "chebackup-internal-rest-credentials")
            let password = try await c.client.get(.secrets, "chebackup-internal")
            let credentials = try await c.client.get(.secrets, "chebackup-internal-rest-credentials")
            for object in [deployment, claim, service, configuration, password, credentials] {
                #expect(object[path: "metadata", "labels", "app.kubernetes.io/part-of"]?.string == "che-backup", "\(object.name ?? "?")")
            }
            let repoPassword = try #require(password[path: "data", "repo-password"]?.string.flatMap { Data(base64Encoded: $0) })
            #expect(repoPassword.count >= 32)
            // Nobody without the credentials reads or deletes backups.
            let anonymous = try await runAsync(try #require(which("curl")), ["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(server.port)/che/config"])
            #expect(anonymous.stdout == "401")

            let requestsBefore = try await c.api.requests().count
            // A second backup, and one after the controller restarts with its configuration gone:
            // the same server, the same Secrets (the password never replaced), snapshots chained.
            try await c.api.apply(Self.internalBackup("second"))
            let second = try await c.waitForState("checlusterbackup", "second")
            #expect(second["state"] as? String == "Succeeded", "\(second)\n\(c.controllerLog("a"))")
            c.controllers["a"]?.kill()
            #expect(try await c.api.kubectl(["delete", "chebackupserverconfiguration", "chebackup-internal"]).status == 0)
            try c.startController("b", extra: controllerFlags)
            try await c.api.apply(Self.internalBackup("third"))
            let third = try await c.waitForState("checlusterbackup", "third")
            #expect(third["state"] as? String == "Succeeded", "\(third)\n\(c.controllerLog("b"))")
            let after = try await c.client.get(.secrets, "chebackup-internal")
            #expect(after[path: "data", "repo-password"] == password[path: "data", "repo-password"])
            #expect(after[path: "metadata", "uid"] == password[path: "metadata", "uid"])
            #expect(try await c.client.get(.secrets, "chebackup-internal-rest-credentials")["data"] == credentials["data"])
            #expect(try await c.client.get(.deployments, "chebackup-internal-server")[path: "metadata", "uid"] == deployment[path: "metadata", "uid"])
            // Since the first backup, the only object made again is the deleted configuration.
            let creates = try await c.api.requests().dropFirst(requestsBefore).filter { $0["method"]?.string == "POST" }
                .compactMap { request -> String? in
                    guard let path = request["path"]?.string, !path.hasSuffix("/events"), !path.contains("/checlusterbackups") else { return nil }
                    return "\(path.split(separator: "/").last ?? "") \(request[path: "body", "metadata", "name"]?.string ?? "?")"
                }
            #expect(creates == ["chebackupserverconfigurations chebackup-internal"], "\(creates)")
            #expect(creates.contains("chebackupserverconfigurations chebackup-internal"), "\(creates)")
            let snapshots = try await runAsync(builtProduct("chebackup"), ["snapshots", "--kubeconfig", c.api.kubeconfigPath, "-n", c.namespace, "--json",
                                                                         "--backup-server-config-name", "chebackup-internal"])
            #expect(snapshots.status == 0, "\(snapshots.stderr)")
            #expect((try JSONSerialization.jsonObject(with: snapshots.stdoutData) as? [Any])?.count == 3)
            #expect(third["snapshotId"] as? String != second["snapshotId"] as? String)

            // A restore from it leaves the internal server's objects alone.
            for db in ["dbche", "keycloak"] { _ = try await c.pg.psql("DROP DATABASE \(db) WITH (FORCE)") }
            try await c.api.apply(c.restoreYAML("back", config: "chebackup-internal"))
            let restored = try await c.waitForState("checlusterrestore", "back")
            #expect(restored["state"] as? String == "Succeeded", "\(restored)\n\(c.controllerLog("b"))")
            for (resource, name) in [(KubeResource.secrets, "chebackup-internal"), (.secrets, "chebackup-internal-rest-credentials"),
                                     (.deployments, "chebackup-internal-server"), (.backupServerConfigurations, "chebackup-internal")] {
                #expect(try await c.client.getIfPresent(resource, name) != nil, "\(name) is gone after a restore")
            }
        }

        @Test func aServerThatNeverBecomesAvailableFailsTheBackup() async throws {
            let c = try await ClusterFixture()
            try c.startController("a", extra: ["--internal-server-address", "127.0.0.1:9", "--internal-server-ready-timeout", "3s"])
            try await c.api.apply(Self.internalBackup("stuck"))
            let status = try await c.waitForState("checlusterbackup", "stuck")
            #expect(status["state"] as? String == "Failed")
            let message = status["message"] as? String ?? ""
            #expect(message.contains("chebackup-internal-server") && message.contains("did not become Available within 3 seconds"), "\(message)")
            #expect(message.split(separator: "\n").count == 1)
        }
    }
}
