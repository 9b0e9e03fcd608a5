import Foundation
import KubernetesAPI
import Storage
import Testing
import TestSupport

extension ClusterSuites {
    /// Workspace `/projects` on the users' DevWorkspace claims: with `includeWorkspaces` each claim is
    /// backed up through a short-lived agent Job of its own, and restored the same way (a missing
    /// claim and namespace recreated; a claim in use skipped with a warning). The test plays the Job
    /// controller and the kubelet: it runs each Job's agent command as a local process on a loopback
    /// address of its own, with the claim's local directory in place of the mount.
    @Suite(.serialized) struct WorkspaceTests {
        /// Plays the Job controller and kubelet for the controller's workspace agent Jobs.
        final class PlayedJobs: @unchecked Sendable {
            struct Run { var agent: ChildProcess; var namespace: String; var pod: String; var readOnly: Bool; var claim: String; var token: String }
            let c: ClusterFixture
            let port = freeLoopbackPort()
            let runs = Locked([String: Run]())
            let seen = Locked([String: (claim: String, readOnly: Bool, token: String)]())
            private var task: Task<Void, Never>?

            init(_ c: ClusterFixture) {
                self.c = c
                task = Task { [weak self] in
                    while !Task.isCancelled {
                        do { try await self?.step() } catch { print("played jobs: \(error)") }
                        try? await Task.sleep(for: .milliseconds(200))
                    }
                }
            }

            func localDir(_ namespace: String, _ claim: String) -> String { c.dir.file("claims/\(namespace)/\(claim)") }

            func step() async throws {
                let jobs = try await c.client.list(.jobs, namespace: KubeClient.allNamespaces, labelSelector: "chebackup.eclipse.org/workspace-agent").items
                let live = Set(jobs.compactMap { "\($0.namespace ?? "")/\($0.name ?? "")" })
                for job in jobs {
                    guard let name = job.name, let namespace = job.namespace, runs.value["\(namespace)/\(name)"] == nil else { continue }
                    let template = try #require(job[path: "spec", "template"])
                    let container = try #require(template[path: "spec", "containers"]?[0])
                    let command = (container["command"]?.array ?? []).compactMap(\.string)
                    let volumes = template[path: "spec", "volumes"]?.array ?? []
                    let claimVolume = try #require(volumes.first { $0["persistentVolumeClaim"] != nil })
                    let claim = try #require(claimVolume[path: "persistentVolumeClaim", "claimName"]?.string)
                    let readOnly = claimVolume[path: "persistentVolumeClaim", "readOnly"]?.bool == true
                    let secretName = try #require(volumes.first { $0["secret"] != nil }?[path: "secret", "secretName"]?.string)
                    let secret = try await c.client.get(.secrets, secretName, namespace: namespace)
                    let token = try #require(secret[path: "data", "token"]?.string.flatMap { Data(base64Encoded: $0) })
                    let tokenFile = c.dir.file("token-\(name)")
                    #expect(FileManager.default.createFile(atPath: tokenFile, contents: token, attributes: [.posixPermissions: 0o600]))
                    let ip = "127.0.0.\(10 + runs.value.count + 1)"
                    // The command as the kubelet would run it, with local paths and address.
                    var arguments: [String] = []
                    var i = 1
                    while i < command.count {
                        let (flag, value) = (command[i], i + 1 < command.count ? command[i + 1] : "")
                        switch flag {
                        case "--listen": arguments += [flag, "\(ip):\(port)"]
                        case "--token-file": arguments += [flag, tokenFile]
                        case "--dir": arguments += [flag, value.replacingOccurrences(of: "=/workspace", with: "=" + localDir(namespace, claim))]
                        default: arguments += [flag, value]
                        }
                        i += 2
                    }
                    #expect(command.first == "chebackup-agent")
                    #expect(arguments.contains("--part-prefix") && arguments.contains("workspaces/\(namespace)"))
                    let agent = try ChildProcess(builtProduct("chebackup-agent"), arguments, log: c.dir.file("agent-\(name).log"))
                    guard await waitForPortAsync(port, host: ip) else { throw ConformanceFailure("the workspace agent of \(name) did not start") }
                    let pod = "\(name)-x7k2p"
                    var podObject: JSON = ["apiVersion": "v1", "kind": "Pod", "metadata": ["name": .string(pod), "labels": template[path: "metadata", "labels"] ?? [:]],
                                           "spec": template["spec"] ?? [:]]
                    podObject[path: "metadata", "labels", "job-name"] = .string(name)
                    _ = try await c.client.create(.pods, podObject, namespace: namespace)
                    _ = try await c.client.updateStatus(.pods, pod, namespace: namespace) { object in
                        object["status"] = ["phase": "Running", "podIP": .string(ip), "conditions": [["type": "Ready", "status": "True"]]]
                    }
                    runs.withLock { $0["\(namespace)/\(name)"] = Run(agent: agent, namespace: namespace, pod: pod, readOnly: readOnly, claim: claim,
                                                                   token: String(decoding: token, as: UTF8.self)) }
                    seen.withLock { $0["\(namespace)/\(name)"] = (claim, readOnly, String(decoding: token, as: UTF8.self)) }
                }
                // A deleted Job takes its pod (the garbage collector's part).
                for (key, run) in runs.value where !live.contains(key) {
                    run.agent.kill()
                    _ = try? await c.client.delete(.pods, run.pod, namespace: run.namespace)
                    runs.withLock { $0[key] = nil }
                }
            }

            deinit {
                task?.cancel()
                for (_, run) in runs.value { run.agent.kill() }
            }
        }

        /// Every file under `root`: relative path → (mode, bytes or link target).
        static func tree(_ root: String) throws -> [String: String] {
            var result: [String: String] = [:]
            let fm = FileManager.default
            guard let walker = fm.enumerator(atPath: root) else { return [:] }
            for case let path as String in walker {
                let full = root + "/" + path
                let attributes = try fm.attributesOfItem(atPath: full)
                let mode = (attributes[.posixPermissions] as? Int) ?? 0
                switch attributes[.type] as? FileAttributeType {
                case .typeSymbolicLink?: result[path] = "link \(try fm.destinationOfSymbolicLink(atPath: full))"
                case .typeDirectory?: result[path] = "dir \(String(mode, radix: 8))"
                default: result[path] = "file \(String(mode, radix: 8)) \(try Data(contentsOf: URL(fileURLWithPath: full)).base64EncodedString())"
                }
            }
            return result
        }

        func seedClaims(_ c: ClusterFixture, _ jobs: PlayedJobs) async throws {
            try await c.api.apply("""
                apiVersion: v1
                kind: Namespace
                metadata:
                  name: alice-che
                  labels: {app.kubernetes.io/part-of: che.eclipse.org, app.kubernetes.io/component: workspaces-namespace}
                  annotations: {che.eclipse.org/username: alice}
                ---
                apiVersion: v1
                kind: Namespace
                metadata:
                  name: bob-che
                  labels: {app.kubernetes.io/part-of: che.eclipse.org, app.kubernetes.io/component: workspaces-namespace}
                  annotations: {che.eclipse.org/username: bob}
                ---
                apiVersion: v1
                kind: PersistentVolumeClaim
                metadata: {name: claim-devworkspace, namespace: alice-che}
                spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 10Gi}}, storageClassName: standard}
                ---
                apiVersion: v1
                kind: PersistentVolumeClaim
                metadata: {name: storage-ws1, namespace: bob-che, labels: {controller.devfile.io/devworkspace_pvc_type: per-workspace}}
                spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 3Gi}}, storageClassName: fast, volumeName: pv-0042}
                ---
                apiVersion: v1
                kind: PersistentVolumeClaim
                metadata: {name: scratch, namespace: bob-che}
                spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
                """)
            var gen = SeededBytes(seed: 4242)
            for (namespace, claim) in [("alice-che", "claim-devworkspace"), ("bob-che", "storage-ws1")] {
                let dir = jobs.localDir(namespace, claim)
                try FileManager.default.createDirectory(atPath: dir + "/projects/app/src", withIntermediateDirectories: true)
                try gen.data(300_000).write(to: URL(fileURLWithPath: dir + "/projects/app/src/main.bin"))
                try gen.text(20_000).write(to: URL(fileURLWithPath: dir + "/projects/app/README.md"))
                try "#!/bin/sh\necho build\n".write(toFile: dir + "/projects/app/build.sh", atomically: true, encoding: .utf8)
                #expect(chmod(dir + "/projects/app/build.sh", 0o755) == 0)
                try FileManager.default.createSymbolicLink(atPath: dir + "/projects/current", withDestinationPath: "app")
            }
        }

        @Test func workspaceClaimsAreBackedUpAndRestoredThroughShortLivedAgents() async throws {
            let c = try await ClusterFixture()
            let jobs = PlayedJobs(c)
            try await seedClaims(c, jobs)
            try c.startController("a", extra: ["--workspace-agent-port", "\(jobs.port)", "--workspace-agent-timeout", "60s", "--workspace-parallelism", "2",
                                               "--workspace-agent-image", "registry.example/chebackup:7"])
            let alice = jobs.localDir("alice-che", "claim-devworkspace"), bob = jobs.localDir("bob-che", "storage-ws1")
            let (aliceTree, bobTree) = (try Self.tree(alice), try Self.tree(bob))
            #expect(aliceTree.count == 7 && bobTree.count == 7)

            try await c.api.apply("apiVersion: org.eclipse.che/v1\nkind: CheClusterBackup\nmetadata: {name: with-workspaces}\nspec: {backupServerConfigRef: rest-server, includeWorkspaces: true}\n")
            let backup = try await c.waitForState("checlusterbackup", "with-workspaces", seconds: 180)
            #expect(backup["state"] as? String == "Succeeded", "\(backup)\n\(c.controllerLog("a"))")
            // One read-only agent per claim (not the unrelated one), each with a one-time token;
            // Jobs and token Secrets are gone afterwards.
            let backups = jobs.seen.value
            #expect(Set(backups.values.map(\.claim)) == ["claim-devworkspace", "storage-ws1"], "\(backups)")
            #expect(backups.values.allSatisfy { $0.readOnly })
            #expect(!backups.values.contains { $0.token == tokenText })
            #expect(Set(backups.values.map(\.token)).count == 2)
            for namespace in ["alice-che", "bob-che"] {
                #expect(try await c.client.list(.jobs, namespace: namespace).items.isEmpty)
                #expect(try await c.client.list(.secrets, namespace: namespace).items.isEmpty)
            }
            let job = try #require(try await c.api.requests().first { ($0["path"]?.string ?? "").hasSuffix("/jobs") && $0["method"]?.string == "POST" })
            #expect(job[path: "body", "spec", "template", "spec", "containers"]?[0]?["image"]?.string == "registry.example/chebackup:7")
            #expect(job[path: "body", "spec", "template", "spec", "securityContext", "runAsUser"]?.int == 1234)

            // bob's namespace and claim are deleted and his files lost; alice's workspace is running
            // and her files changed since.
            #expect(try await c.api.kubectl(["delete", "pvc", "storage-ws1", "-n", "bob-che"]).status == 0)
            #expect(try await c.api.kubectl(["delete", "namespace", "bob-che"]).status == 0)
            try FileManager.default.removeItem(atPath: bob)
            try FileManager.default.createDirectory(atPath: bob, withIntermediateDirectories: true)
            try "new work".write(toFile: alice + "/projects/app/README.md", atomically: true, encoding: .utf8)
            let aliceNow = try Self.tree(alice)
            try await c.api.apply("""
                apiVersion: v1
                kind: Pod
                metadata: {name: workspace-alice-1, namespace: alice-che}
                spec:
                  containers: [{name: tools, image: quay.io/devfile/universal-developer-image}]
                  volumes: [{name: claim-devworkspace, persistentVolumeClaim: {claimName: claim-devworkspace}}]
                """)
            _ = try await c.client.updateStatus(.pods, "workspace-alice-1", namespace: "alice-che") { $0["status"] = ["phase": "Running"] }

            jobs.seen.withLock { $0 = [:] }
            try await c.api.apply(c.restoreYAML("back", config: "rest-server"))
            let restore = try await c.waitForState("checlusterrestore", "back", seconds: 180)
            #expect(restore["state"] as? String == "Succeeded", "\(restore)\n\(c.controllerLog("a"))")
            let warnings = restore["warnings"] as? [String] ?? []
            #expect(warnings.count == 1 && warnings.first?.contains("alice-che/claim-devworkspace") == true
                    && warnings.first?.contains("in use by pod workspace-alice-1") == true, "\(warnings)")
            #expect((restore["message"] as? String)?.contains("1 warning") == true)
            // bob's claim and namespace are back as they were recorded (not bound to the old volume),
            // and his files byte for byte; alice's, in use, are untouched.
            let namespace = try await c.client.get(.namespaces, "bob-che")
            #expect(namespace[path: "metadata", "annotations", "che.eclipse.org/username"]?.string == "bob")
            let claim = try await c.client.get(.persistentVolumeClaims, "storage-ws1", namespace: "bob-che")
            #expect(claim[path: "spec", "resources", "requests", "storage"]?.string == "3Gi")
            #expect(claim[path: "spec", "storageClassName"]?.string == "fast")
            #expect(claim[path: "spec", "volumeName"] == nil)
            #expect(claim[path: "metadata", "labels", "controller.devfile.io/devworkspace_pvc_type"]?.string == "per-workspace")
            #expect(try Self.tree(bob) == bobTree)
            #expect(try Self.tree(alice) == aliceNow)
            #expect(jobs.seen.value.values.map(\.claim) == ["storage-ws1"] && jobs.seen.value.values.allSatisfy { !$0.readOnly })
        }

        @Test func anAgentThatNeverBecomesReadyFailsTheBackupNamingTheClaim() async throws {
            let c = try await ClusterFixture()
            try await c.api.apply("""
                apiVersion: v1
                kind: Namespace
                metadata: {name: carol-che}
                ---
                apiVersion: v1
                kind: PersistentVolumeClaim
                metadata: {name: claim-devworkspace, namespace: carol-che}
                spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
                """)
            try c.startController("a", extra: ["--workspace-agent-timeout", "3s"])
            try await c.api.apply("apiVersion: org.eclipse.che/v1\nkind: CheClusterBackup\nmetadata: {name: stuck}\nspec: {backupServerConfigRef: rest-server, includeWorkspaces: true}\n")
            let status = try await c.waitForState("checlusterbackup", "stuck")
            #expect(status["state"] as? String == "Failed")
            let message = status["message"] as? String ?? ""
            #expect(message.contains("carol-che/claim-devworkspace") && message.contains("was not Ready within 3 seconds"), "\(message)")
            #expect(try await c.snapshotCount() == 0, "no partial snapshot")
            #expect(try await c.client.list(.jobs, namespace: "carol-che").items.isEmpty, "the Job was removed")
            #expect(try await c.client.list(.secrets, namespace: "carol-che").items.isEmpty, "the token was removed")
        }
    }
}
