import AdmissionWebhook
import ControllerCore
import Foundation
import KubernetesAPI
import Logging

/// Che's server: the Deployments labelled `app.kubernetes.io/component=che`, scaled to 0 while
/// a restore runs, then back to their replicas; the restore waits until they are Available. One
/// whose pods carry an agent (label `chebackup.eclipse.org/agent` on its pod template) is left
/// running: the agent inside must restore its files (likewise one labelled
/// `chebackup.eclipse.org/inject`, whose pods get the agent from the webhook).
struct CheDeployment: CheServer {
    static let selector = "app.kubernetes.io/component=che"
    let client: KubeClient
    let namespace: String
    let readyTimeout: Duration
    let pollInterval: Duration

    func stop(stage: @escaping @Sendable (String) -> Void) async throws -> CheServerState {
        var state = CheServerState()
        for deployment in try await client.list(.deployments, namespace: namespace, labelSelector: Self.selector).items {
            guard let name = deployment.name else { continue }
            let templateLabels = deployment[path: "spec", "template", "metadata", "labels"]
            // An agent in the template, or one the webhook injects into its pods.
            if let role = templateLabels?[PodAgents.label]?.string ?? templateLabels?[SidecarInjector.injectLabel]?.string {
                stage("The Che server Deployment \(name) carries the \(role) agent: left running while its data is restored")
                continue
            }
            let replicas = Int(deployment[path: "spec", "replicas"]?.int ?? 1)
            state.replicas[name] = replicas
            stage("Scaling the Che server Deployment \(name) to 0 (from \(replicas))")
            try await client.scale(.deployments, name, replicas: 0, namespace: namespace)
        }
        return state
    }

    func start(_ state: CheServerState, stage: @escaping @Sendable (String) -> Void) async throws {
        guard !state.replicas.isEmpty else {
            stage("Waiting until Che is ready: no Che server Deployment (label \(Self.selector)) in namespace \(namespace)")
            return
        }
        for (name, replicas) in state.replicas.sorted(by: { $0.key < $1.key }) {
            stage("Scaling the Che server Deployment \(name) back to \(replicas)")
            try await client.scale(.deployments, name, replicas: replicas, namespace: namespace)
        }
        stage("Waiting until Che is ready")
        let deadline = ContinuousClock.now + readyTimeout
        for (name, replicas) in state.replicas.sorted(by: { $0.key < $1.key }) {
            while !(try await isAvailable(name, replicas: replicas)) {
                guard ContinuousClock.now < deadline else {
                    throw ControllerError(.cheNotReady, "the Che server Deployment \(name) did not become Available within \(Self.format(readyTimeout)) (--che-ready-timeout)")
                }
                try await Task.sleep(for: pollInterval)
            }
        }
    }

    func isAvailable(_ name: String, replicas: Int) async throws -> Bool {
        guard let deployment = try await client.getIfPresent(.deployments, name, namespace: namespace) else { return false }
        return Self.isAvailable(deployment, replicas: replicas)
    }

    /// The Deployment's status describes its spec and says at least `replicas` are available.
    static func isAvailable(_ deployment: JSON, replicas: Int) -> Bool {
        // The status must describe the scaled spec (observedGeneration), not the one before it.
        guard (deployment[path: "status", "observedGeneration"]?.int ?? 0) >= (deployment.generation ?? 0) else { return false }
        let available = (deployment[path: "status", "conditions"]?.array ?? []).contains {
            $0["type"]?.string == "Available" && $0["status"]?.string == "True"
        }
        return available && Int(deployment[path: "status", "availableReplicas"]?.int ?? 0) >= replicas
    }

    static func format(_ d: Duration) -> String {
        let s = d.components.seconds
        return s % 60 == 0 ? "\(s / 60) minutes" : "\(s) seconds"
    }
}
