import Foundation
import KubernetesAPI
import Logging
import Storage
import Testing
import TestSupport

/// The suites that each run a whole installation in a "cluster" (API stand-in, PostgreSQL, agents,
/// controllers): one after the other, so that their load does not starve the rest of the run.
@Suite(.serialized) struct ClusterSuites {}

/// A Che installation "in a cluster" for Kubernetes-mode tests: the API server stand-in, real
/// PostgreSQL and files agents (their Pods in the API carry the loopback address and port), a
/// real backup server (`chebackup rest-server`), Che's objects and server Deployment, and the
/// test playing the Deployment controller (it sets `availableReplicas` a moment after a scale).
final class ClusterFixture: @unchecked Sendable {
    let api: KubeAPIServer
    let dir = TempDir("chebackup-cluster")
    let pg: PostgresCluster
    let postgresAgent: AgentProcess
    let filesAgent: AgentProcess
    let backupServer: ChildProcess
    let backupServerPort = freeLoopbackPort()
    let client: KubeClient
    let namespace = "eclipse-che"
    var controllers: [String: ChildProcess] = [:]
    let playDeployments = Locked(true)
    private var deploymentTask: Task<Void, Never>?
    var data: String { dir.file("che-data") }

    init(filesPreHook: String? = nil) async throws {
        api = try await KubeAPIServer(state: true)
        pg = try await PostgresCluster.make(seed: true)
        postgresAgent = try await AgentProcess(role: "postgres", arguments: ["--database", "dbche", "--database", "keycloak"], environment: pg.env)
        var gen = SeededBytes(seed: 77)
        try FileManager.default.createDirectory(atPath: dir.file("che-data/sub"), withIntermediateDirectories: true)
        try gen.data(400_000).write(to: URL(fileURLWithPath: dir.file("che-data/sub/blob")))
        try gen.text(100_000).write(to: URL(fileURLWithPath: dir.file("che-data/settings.json")))
        var filesArgs = ["--dir", "che-data=\(dir.file("che-data"))"]
        if let filesPreHook { filesArgs += ["--pre-hook", filesPreHook] }
        filesAgent = try await AgentProcess(role: "files", arguments: filesArgs)
        try FileManager.default.createDirectory(atPath: dir.file("backup-server"), withIntermediateDirectories: true)
        backupServer = try ChildProcess(builtProduct("chebackup"), ["rest-server", "--path", dir.file("backup-server"),
                                                                   "--listen", "127.0.0.1:\(backupServerPort)"], log: dir.file("rest-server.log"))
        guard await waitForPortAsync(backupServerPort) else { throw ConformanceFailure("rest-server did not start") }
        var config = try api.config()
        config.namespace = namespace
        var logger = Logger(label: "cluster-fixture")
        logger.logLevel = .error
        client = KubeClient(config: config, logger: logger)
        try await seed()
        // The task holds what it uses, not the fixture: the fixture's deinit stops it.
        deploymentTask = Task { [client, playDeployments] in await Self.playDeploymentController(client, playDeployments) }
    }

    func agentPort(_ agent: AgentProcess) -> Int {
        guard case .tcp(_, let port) = agent.endpoint else { return 0 }
        return port
    }

    /// Che's objects, its Deployment, the agents' Pods, the token and a backup server configuration.
    func seed() async throws {
        var text = try String(contentsOfFile: KubeAPIServer.repoRoot + "/tests/kube/che-installation.yaml", encoding: .utf8)
        let values = ["AGENT_TOKEN": tokenText, "REPO_PASSWORD": "cluster-repo-pw", "SERVER_PORT": "\(backupServerPort)",
                      "DOMAIN": "che.cluster.test", "PG_AGENT_PORT": "\(agentPort(postgresAgent))", "FILES_AGENT_PORT": "\(agentPort(filesAgent))"]
        for (name, value) in values { text = text.replacingOccurrences(of: "${\(name)}", with: value) }
        try await api.apply(text)
        try await setStatus("checlusters", "eclipse-che", ["cheVersion": "7.99.0", "cheURL": "https://che.cluster.test"])
        for role in ["postgres", "files"] { try await setAgentPodStatus("\(role)-agent", ready: true) }
    }

    func addAgentPod(_ role: String, port: Int, ready: Bool = true, name: String? = nil) async throws {
        let name = name ?? "\(role)-agent"
        try await api.apply("""
            apiVersion: v1
            kind: Pod
            metadata: {name: \(name), labels: {chebackup.eclipse.org/agent: \(role)}}
            spec:
              containers:
                - {name: main, image: example/\(role)}
                - {name: chebackup-agent, image: example/chebackup-agent, ports: [{name: chebackup-agent, containerPort: \(port)}]}
            """)
        try await setAgentPodStatus(name, ready: ready)
    }

    /// Plays the kubelet: the pod runs on the loopback address, Ready or not.
    func setAgentPodStatus(_ name: String, ready: Bool) async throws {
        try await setStatus("pods", name, ["phase": "Running", "podIP": "127.0.0.1",
                                     "conditions": [["type": "Ready", "status": ready ? "True" : "False"]]])
    }

    func setStatus(_ plural: String, _ name: String, _ status: [String: Any]) async throws {
        let patch = try JSONSerialization.data(withJSONObject: ["status": status])
        let r = try await api.kubectl(["patch", plural, name, "--subresource=status", "--type=merge", "-p", String(decoding: patch, as: UTF8.self)])
        guard r.status == 0 else { throw ConformanceFailure("status patch of \(plural)/\(name) failed: \(r.stderr)") }
    }

    /// Plays the Deployment controller for `che`: a moment after its replicas change, its status
    /// says they are available.
    static func playDeploymentController(_ client: KubeClient, _ playDeployments: Locked<Bool>) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(200))
            guard playDeployments.value,
                  let deployment = try? await client.getIfPresent(.deployments, "che"),
                  let replicas = deployment[path: "spec", "replicas"]?.int.map(Int.init) else { continue }
            let generation = deployment.generation ?? 1
            if deployment[path: "status", "observedGeneration"]?.int != generation {
                try? await Task.sleep(for: .milliseconds(300))
                _ = try? await client.updateStatus(.deployments, "che") { object in
                    object["status"] = ["observedGeneration": .int(generation), "replicas": .int(Int64(replicas)),
                                        "availableReplicas": .int(Int64(replicas)), "conditions": [["type": "Available", "status": "True"]]]
                }
            }
        }
    }

    /// `chebackup controller --kubeconfig …` as a child process.
    func startController(_ identity: String, cheReadyTimeout: String = "60s", extra: [String] = []) throws {
        let log = dir.file("controller-\(identity).log")
        controllers[identity] = try ChildProcess(builtProduct("chebackup"),
            ["controller", "--kubeconfig", api.kubeconfigPath, "-n", namespace, "--identity", identity, "--lease-duration", "10s",
             "--che-ready-timeout", cheReadyTimeout, "-v"] + extra, log: log)
    }

    func controllerLog(_ identity: String) -> String {
        (try? String(contentsOfFile: dir.file("controller-\(identity).log"), encoding: .utf8)) ?? ""
    }

    /// Waits until the resource's status.state is one of `states`; returns its status.
    func waitForState(_ kind: String, _ name: String, _ states: Set<String> = ["Succeeded", "Failed"], seconds: Double = 120) async throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let object = try await api.get([kind, name]), let status = object["status"] as? [String: Any],
               let state = status["state"] as? String, states.contains(state) {
                return status
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        throw ConformanceFailure("\(kind) \(name) did not reach \(states) in \(seconds) s; controllers:\n" +
                                 controllers.keys.sorted().map { "--- \($0)\n" + controllerLog($0) }.joined(separator: "\n"))
    }

    func backupYAML(_ name: String, config: String? = "rest-server") -> String {
        "apiVersion: org.eclipse.che/v1\nkind: CheClusterBackup\nmetadata: {name: \(name)}\nspec: {\(config.map { "backupServerConfigRef: \($0)" } ?? "")}\n"
    }

    func restoreYAML(_ name: String, snapshot: String? = nil, config: String? = nil) -> String {
        var spec: [String] = []
        if let snapshot { spec.append("snapshotId: \"\(snapshot)\"") }
        if let config { spec.append("backupServerConfigRef: \(config)") }
        return "apiVersion: org.eclipse.che/v1\nkind: CheClusterRestore\nmetadata: {name: \(name)}\nspec: {\(spec.joined(separator: ", "))}\n"
    }

    /// The snapshots in the backup server's repository (as `chebackup snapshots --json` sees them).
    func snapshotCount() async throws -> Int {
        let r = try await runAsync(builtProduct("chebackup"), ["snapshots", "--kubeconfig", api.kubeconfigPath, "-n", namespace, "--json",
                                                    "--backup-server-config-name", "rest-server"])
        guard r.status == 0 else { throw ConformanceFailure("snapshots failed: \(r.stderr)") }
        return (try JSONSerialization.jsonObject(with: r.stdoutData) as? [Any])?.count ?? -1
    }

    /// Events recorded on a resource, by reason.
    func eventReasons(_ name: String) async throws -> [String] {
        let list = try await api.get(["events"])?["items"] as? [[String: Any]] ?? []
        return list.filter { ($0["involvedObject"] as? [String: Any])?["name"] as? String == name }.compactMap { $0["reason"] as? String }.sorted()
    }

    deinit {
        deploymentTask?.cancel()
        for (_, c) in controllers { c.kill() }
        backupServer.kill()
        dir.remove()
    }
}
