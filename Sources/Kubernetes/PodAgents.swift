import AgentClient
import ControllerCore
import Foundation
import KubernetesAPI
import LineProtocol

/// The agents are the Ready pods of the namespace labelled `chebackup.eclipse.org/agent` with
/// their role, reached at `status.podIP` and the container port named `chebackup-agent`.
struct PodAgents: AgentDirectory {
    static let label = "chebackup.eclipse.org/agent"
    static let portName = "chebackup-agent"
    static let roles = ["postgres", "files"]

    let client: KubeClient
    let namespace: String

    func agents() async throws -> [AgentRef] {
        let pods = try await client.list(.pods, namespace: namespace, labelSelector: "\(Self.label) in (\(Self.roles.joined(separator: ",")))").items
        return try Self.roles.map { role in
            let candidates = pods.filter { $0[path: "metadata", "labels", Self.label]?.string == role }
                .sorted { ($0.name ?? "") < ($1.name ?? "") }
            guard !candidates.isEmpty else {
                throw ControllerError(.agentUnavailable, "no \(role) agent: no pod in namespace \(namespace) is labelled \(Self.label)=\(role)")
            }
            guard let pod = candidates.first(where: Self.isReady) else {
                throw ControllerError(.agentUnavailable, "the \(role) agent pod \(candidates[0].name ?? "?") in namespace \(namespace) is not Ready")
            }
            return AgentRef(role: role, endpoint: try Self.endpoint(pod, role: role))
        }
    }

    static func isReady(_ pod: JSON) -> Bool {
        guard pod[path: "metadata", "deletionTimestamp"] == nil, pod[path: "status", "podIP"]?.string != nil else { return false }
        return (pod[path: "status", "conditions"]?.array ?? []).contains {
            $0["type"]?.string == "Ready" && $0["status"]?.string == "True"
        }
    }

    static func endpoint(_ pod: JSON, role: String) throws -> AgentEndpoint {
        let ports = (pod[path: "spec", "containers"]?.array ?? []).flatMap { $0["ports"]?.array ?? [] }
        guard let ip = pod[path: "status", "podIP"]?.string,
              let port = ports.first(where: { $0["name"]?.string == portName })?["containerPort"]?.int else {
            throw ControllerError(.agentUnavailable, "the \(role) agent pod \(pod.name ?? "?") has no container port named \(portName)")
        }
        return .tcp(host: ip, port: Int(port))
    }
}

/// The token the agents share: key `token` of the Secret `che-backup-agent-token`.
struct SecretToken: AgentTokenSource {
    static let secretName = "che-backup-agent-token"
    let secrets: any SecretStore

    func token() async throws -> SharedToken {
        guard let secret = try await secrets.secret(Self.secretName) else {
            throw ControllerError(.notFound, "secret \(Self.secretName) (the agents' token) not found")
        }
        guard let value = secret.value("token") else {
            throw ControllerError(.notFound, "secret \(Self.secretName) has no key \"token\" (the agents' token)")
        }
        return try SharedToken(Data(value.utf8))
    }
}
