import AgentClient
import ControllerCore
import Foundation
import KubernetesAPI
import LineProtocol
import Logging
import Repository
import Storage

/// How workspace claims are reached.
public struct WorkspaceSettings: Sendable {
    /// The image of the short-lived agents (the one with `chebackup-agent`).
    public var agentImage = "quay.io/example/chebackup:0.1.0"
    public var agentPort = 7002
    /// Claims backed up or restored at once.
    public var parallelism = 4
    /// How long an agent's pod may take to be Ready.
    public var readyTimeout: Duration = .seconds(300)
    public var pollInterval: Duration = .seconds(1)
    /// The user and group the agent runs as: Che's workspace user on Kubernetes (1234), so it
    /// can read and restore the workspace's files.
    public var runAsUser: Int64 = 1234
    public var fsGroup: Int64 = 1234
    public init() {}
}

/// The DevWorkspace claims in the users' namespaces: `claim-devworkspace` (the common one) and
/// those labelled `controller.devfile.io/devworkspace_pvc_type` (per-workspace, async). Each is
/// reached through a Job running a files agent that mounts it (`--part-prefix
/// workspaces/<namespace>`), with a one-time token in a Secret of that namespace (the
/// installation's token never leaves Che's namespace); Job and Secret are removed afterwards.
struct WorkspaceClaims: WorkspaceVolumes {
    static let commonClaim = "claim-devworkspace"
    static let typeLabel = "controller.devfile.io/devworkspace_pvc_type"
    static let jobLabel = "chebackup.eclipse.org/workspace-agent"
    static let labels: [String: JSON] = ["app.kubernetes.io/part-of": "che-backup", "app.kubernetes.io/component": "workspace-agent"]

    let client: KubeClient
    let settings: WorkspaceSettings
    let logger: Logger

    var parallelism: Int { settings.parallelism }

    func claims() async throws -> [WorkspaceClaim] {
        try await client.list(.persistentVolumeClaims, namespace: KubeClient.allNamespaces).items.compactMap { pvc -> WorkspaceClaim? in
            guard let name = pvc.name, let namespace = pvc.namespace, pvc[path: "metadata", "deletionTimestamp"] == nil,
                  name == Self.commonClaim || pvc[path: "metadata", "labels", Self.typeLabel] != nil else { return nil }
            return WorkspaceClaim(namespace: namespace, name: name)
        }.sorted()
    }

    // MARK: records

    /// A claim as it is recreated: its spec without the volume it is bound to, and its
    /// namespace's labels and annotations (Che's user namespaces carry the user's name).
    func record(_ claim: WorkspaceClaim) async throws -> JSON {
        var pvc = ClusterObjects.stripped(try await client.get(.persistentVolumeClaims, claim.name, namespace: claim.namespace),
                                          kind: .persistentVolumeClaims)
        pvc[path: "spec", "volumeName"] = nil
        pvc[path: "metadata", "namespace"] = nil
        var annotations = pvc[path: "metadata", "annotations"]?.object ?? [:]
        for key in annotations.keys where key.hasPrefix("pv.kubernetes.io/") || key.hasPrefix("volume.") || key.hasPrefix("kubectl.kubernetes.io/") {
            annotations[key] = nil
        }
        pvc[path: "metadata", "annotations"] = annotations.isEmpty ? nil : .object(annotations)
        let namespace = try await client.getIfPresent(.namespaces, claim.namespace)
        return ["claim": pvc, "namespace": ["labels": namespace?[path: "metadata", "labels"] ?? [:],
                                           "annotations": namespace?[path: "metadata", "annotations"] ?? [:]]]
    }

    func backupRecords(of claims: [WorkspaceClaim], into repository: Repository, part name: String, options: BackupOptions) async throws -> [Part] {
        let dir = try PrivateDirectory(prefix: "chebackup-claims")
        let tree = dir.path + "/claims"
        try FileManager.default.createDirectory(atPath: tree, withIntermediateDirectories: true)
        for claim in claims {
            try FileManager.default.createDirectory(atPath: "\(tree)/\(claim.namespace)", withIntermediateDirectories: true)
            try await record(claim).data(sorted: true).write(to: URL(fileURLWithPath: "\(tree)/\(claim.namespace)/\(claim.name).json"))
        }
        return try await repository.storeParts([.path(tree, name: name)], options: options).parts
    }

    func records(_ part: Part, from repository: Repository) async throws -> [WorkspaceClaim: Data] {
        let dir = try PrivateDirectory(prefix: "chebackup-claims")
        var options = RestoreOptions()
        options.connections = repository.storage.defaultConnections
        _ = try await Restorer(repository: repository, options: options).restoreTree(part, into: dir.path + "/claims")
        var result: [WorkspaceClaim: Data] = [:]
        let fm = FileManager.default
        for namespace in try fm.contentsOfDirectory(atPath: dir.path + "/claims") {
            for file in try fm.contentsOfDirectory(atPath: "\(dir.path)/claims/\(namespace)") where file.hasSuffix(".json") {
                let claim = WorkspaceClaim(namespace: namespace, name: String(file.dropLast(5)))
                result[claim] = try Data(contentsOf: URL(fileURLWithPath: "\(dir.path)/claims/\(namespace)/\(file)"))
            }
        }
        return result
    }

    // MARK: restore

    func prepareRestore(_ claim: WorkspaceClaim, record: Data?) async throws -> String? {
        if try await client.getIfPresent(.persistentVolumeClaims, claim.name, namespace: claim.namespace) != nil {
            let users = try await client.list(.pods, namespace: claim.namespace).items.filter { pod in
                let phase = pod[path: "status", "phase"]?.string ?? "Pending"
                return (phase == "Running" || phase == "Pending") && pod[path: "metadata", "labels", Self.jobLabel] == nil
                    && (pod[path: "spec", "volumes"]?.array ?? []).contains { $0[path: "persistentVolumeClaim", "claimName"]?.string == claim.name }
            }.compactMap(\.name).sorted()
            if !users.isEmpty {
                return "the workspace claim \(claim) was not restored: it is in use by pod \(users.joined(separator: ", ")); stop the workspace and restore again"
            }
            return nil
        }
        guard let record else {
            return "the workspace claim \(claim) was not restored: it is gone and the snapshot has no record to make it again"
        }
        let saved = try JSON(data: record)
        if try await client.getIfPresent(.namespaces, claim.namespace) == nil {
            let namespace: JSON = ["apiVersion": "v1", "kind": "Namespace",
                                   "metadata": ["name": .string(claim.namespace), "labels": saved[path: "namespace", "labels"] ?? [:],
                                                "annotations": saved[path: "namespace", "annotations"] ?? [:]]]
            _ = try await client.create(.namespaces, namespace)
            logger.notice("created the namespace \(claim.namespace) of workspace claim \(claim)")
        }
        guard var pvc = saved["claim"], pvc.object != nil else {
            throw ControllerError(.invalidResource, "the snapshot's record of workspace claim \(claim) holds no claim")
        }
        pvc[path: "metadata", "name"] = .string(claim.name)
        pvc[path: "metadata", "namespace"] = .string(claim.namespace)
        _ = try await client.create(.persistentVolumeClaims, pvc, namespace: claim.namespace)
        logger.notice("created the workspace claim \(claim) from the snapshot")
        return nil
    }

    // MARK: the agent

    func withAgent<T: Sendable>(for claim: WorkspaceClaim, readOnly: Bool, stage: @escaping @Sendable (String) -> Void,
                                _ body: @escaping @Sendable (AgentRef) async throws -> T) async throws -> T {
        let tokenText = Primitives.random(32).map { String(format: "%02x", $0) }.joined()
        let token = try SharedToken(Data(tokenText.utf8))
        let job = "chebackup-\(readOnly ? "backup" : "restore")-\(String(UInt64.random(in: 0...UInt64.max), radix: 36).prefix(8))"
        stage("Starting a workspace agent (Job \(job)) for the claim \(claim)")
        let secret: JSON = ["apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                            "metadata": ["name": .string(job + "-token"), "labels": .object(Self.labels.merging([Self.jobLabel: .string(job)]) { a, _ in a })],
                            "data": ["token": .string(Data(tokenText.utf8).base64EncodedString())]]
        _ = try await client.create(.secrets, secret, namespace: claim.namespace)
        do {
            _ = try await client.create(.jobs, try await jobObject(job, claim: claim, readOnly: readOnly), namespace: claim.namespace)
            let endpoint = try await waitForAgent(job, claim: claim)
            let result = try await body(AgentRef(role: "files", endpoint: endpoint, token: token))
            await remove(job, claim: claim)
            return result
        } catch {
            await remove(job, claim: claim)
            throw error
        }
    }

    func jobObject(_ job: String, claim: WorkspaceClaim, readOnly: Bool) async throws -> JSON {
        let labels = JSON.object(Self.labels.merging([Self.jobLabel: .string(job)]) { a, _ in a })
        var podSpec: JSON = [
            "restartPolicy": "Never", "automountServiceAccountToken": false,
            "securityContext": ["runAsNonRoot": true, "runAsUser": .int(settings.runAsUser), "fsGroup": .int(settings.fsGroup),
                                "seccompProfile": ["type": "RuntimeDefault"]],
            "containers": [[
                "name": "chebackup-agent", "image": .string(settings.agentImage), "imagePullPolicy": "IfNotPresent",
                "command": ["chebackup-agent", "--role", "files", "--listen", .string("0.0.0.0:\(settings.agentPort)"),
                            "--token-file", "/etc/chebackup-agent/token", "--part-prefix", .string("workspaces/\(claim.namespace)"),
                            "--dir", .string("\(claim.name)=/workspace")],
                "ports": [["name": "chebackup-agent", "containerPort": .int(Int64(settings.agentPort)), "protocol": "TCP"]],
                "readinessProbe": ["tcpSocket": ["port": "chebackup-agent"], "periodSeconds": 2],
                "resources": ["requests": ["cpu": "50m", "memory": "64Mi"], "limits": ["memory": "512Mi"]],
                "securityContext": ["allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": ["drop": ["ALL"]]],
                "volumeMounts": [["name": "workspace", "mountPath": "/workspace", "readOnly": .bool(readOnly)],
                                 ["name": "token", "mountPath": "/etc/chebackup-agent", "readOnly": true],
                                 ["name": "tmp", "mountPath": "/tmp"]],
            ]],
            "volumes": [["name": "workspace", "persistentVolumeClaim": ["claimName": .string(claim.name), "readOnly": .bool(readOnly)]],
                        ["name": "token", "secret": ["secretName": .string(job + "-token"), "defaultMode": .int(0o440)]],
                        ["name": "tmp", "emptyDir": [:]]],
        ]
        // A ReadWriteOnce claim attached to a node can only be mounted there too.
        if let node = try await nodeUsing(claim) {
            podSpec["affinity"] = ["nodeAffinity": ["requiredDuringSchedulingIgnoredDuringExecution": ["nodeSelectorTerms": [
                ["matchExpressions": [["key": "kubernetes.io/hostname", "operator": "In", "values": [.string(node)]]]],
            ]]]]
        }
        return ["apiVersion": "batch/v1", "kind": "Job",
                "metadata": ["name": .string(job), "labels": labels],
                "spec": ["backoffLimit": 0, "activeDeadlineSeconds": 21_600, "ttlSecondsAfterFinished": 300,
                         "template": ["metadata": ["labels": labels], "spec": podSpec]]]
    }

    func nodeUsing(_ claim: WorkspaceClaim) async throws -> String? {
        try await client.list(.pods, namespace: claim.namespace).items.first { pod in
            (pod[path: "spec", "volumes"]?.array ?? []).contains { $0[path: "persistentVolumeClaim", "claimName"]?.string == claim.name }
        }?[path: "spec", "nodeName"]?.string
    }

    /// The Job's pod, once Ready, at its pod IP and agent port.
    func waitForAgent(_ job: String, claim: WorkspaceClaim) async throws -> AgentEndpoint {
        let deadline = ContinuousClock.now + settings.readyTimeout
        var last = "no pod yet"
        while true {
            let pods = try await client.list(.pods, namespace: claim.namespace, labelSelector: "\(Self.jobLabel)=\(job)").items
            if let pod = pods.first(where: PodAgents.isReady) {
                return try PodAgents.endpoint(pod, role: "files")
            }
            if let pod = pods.first {
                let waiting = (pod[path: "status", "containerStatuses"]?.array ?? []).compactMap { $0[path: "state", "waiting", "reason"]?.string }
                last = "pod \(pod.name ?? "?") is \(pod[path: "status", "phase"]?.string ?? "Pending")" + (waiting.isEmpty ? "" : " (\(waiting.joined(separator: ", ")))")
                if pod[path: "status", "phase"]?.string == "Failed" || pod[path: "status", "phase"]?.string == "Succeeded" {
                    throw ControllerError(.agentUnavailable, "the agent for workspace claim \(claim) (Job \(job)) ended before it was Ready: \(last)")
                }
            }
            guard ContinuousClock.now < deadline else {
                throw ControllerError(.agentUnavailable, "the agent for workspace claim \(claim) (Job \(job)) was not Ready within \(CheDeployment.format(settings.readyTimeout)): \(last)")
            }
            try await Task.sleep(for: settings.pollInterval)
        }
    }

    /// The Job (its pods with it) and the token's Secret; a failure is logged, the Job's
    /// deadline and TTL clean up what remains.
    func remove(_ job: String, claim: WorkspaceClaim) async {
        do { _ = try await client.delete(.jobs, job, namespace: claim.namespace, propagation: "Background") } catch {
            logger.warning("cannot delete the Job \(job) in namespace \(claim.namespace): \(describe(error))")
        }
        do { _ = try await client.delete(.secrets, job + "-token", namespace: claim.namespace) } catch {
            logger.warning("cannot delete the Secret \(job)-token in namespace \(claim.namespace): \(describe(error))")
        }
    }
}
