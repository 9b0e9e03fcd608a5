import ControllerCore
import Foundation
import KubernetesAPI
import Logging

extension ResourceKind {
    /// The API resource of each kind.
    var api: KubeResource {
        switch self {
        case .backupServerConfiguration: .backupServerConfigurations
        case .backup: .clusterBackups
        case .restore: .clusterRestores
        case .schedule: .backupSchedules
        case .secret: .secrets
        }
    }
}

/// Che's backup resources and Secrets in one namespace, through the API server. Status is
/// written only through `/status` with the object's resourceVersion (a conflict re-reads).
public struct KubeResourceStore: ResourceStore, SecretStore {
    let client: KubeClient
    let namespace: String
    let logger: Logger

    public init(client: KubeClient, namespace: String, logger: Logger) {
        self.client = client
        self.namespace = namespace
        self.logger = logger
    }

    func decode<R: CheResource>(_ type: R.Type, _ object: JSON) throws -> R {
        do { return try object.decode(R.self) } catch {
            throw ControllerError(.invalidResource, "\(R.kind.rawValue) \(object.name ?? "?") cannot be read: \(error)")
        }
    }

    public func get<R: CheResource>(_ type: R.Type, _ name: String) async throws -> R? {
        guard let object = try await client.getIfPresent(R.kind.api, name, namespace: namespace) else { return nil }
        return try decode(R.self, object)
    }

    public func list<R: CheResource>(_ type: R.Type) async throws -> [R] {
        try await client.list(R.kind.api, namespace: namespace).items.compactMap { object in
            do { return try decode(R.self, object) } catch {
                logger.error("skipping: \(describe(error))")
                return nil
            }
        }.sorted { $0.metadata.name < $1.metadata.name }
    }

    /// The object as the API server takes it: the fields a server sets are dropped.
    func body<R: CheResource>(_ resource: R) throws -> JSON {
        var object = try JSON(encoding: resource)
        object[path: ["metadata", "namespace"]] = .string(namespace)
        for field in ["uid", "resourceVersion", "generation", "creationTimestamp"] {
            object["metadata"]?[field] = nil
        }
        object["status"] = nil
        return object
    }

    public func create<R: CheResource>(_ resource: R, replace: Bool) async throws {
        let object = try body(resource)
        do {
            _ = try await client.create(R.kind.api, object, namespace: namespace)
        } catch let error as KubeError where error.code == .alreadyExists && replace {
            guard var current = try await client.getIfPresent(R.kind.api, resource.metadata.name, namespace: namespace) else {
                _ = try await client.create(R.kind.api, object, namespace: namespace)
                return
            }
            for (key, value) in object.object ?? [:] where key != "metadata" { current[key] = value }
            current["metadata"]?["labels"] = object["metadata"]?["labels"]
            current["metadata"]?["annotations"] = object["metadata"]?["annotations"]
            _ = try await client.replace(R.kind.api, current, namespace: namespace)
        }
    }

    public func delete<R: CheResource>(_ type: R.Type, _ name: String) async throws -> Bool {
        try await client.delete(R.kind.api, name, namespace: namespace)
    }

    public func updateStatus<R: StatusResource>(_ type: R.Type, _ name: String, _ status: R.Status) async throws {
        let encoded = try JSON(encoding: status)
        _ = try await client.updateStatus(R.kind.api, name, namespace: namespace) { object in
            object["status"] = encoded
        }
    }

    public func changes<R: CheResource>(_ type: R.Type) -> AsyncThrowingStream<R, any Error> {
        let events = client.watch(R.kind.api, namespace: namespace)
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    for try await event in events where event.kind != .deleted {
                        do { continuation.yield(try decode(R.self, event.object)) } catch {
                            logger.error("skipping: \(describe(error))")
                        }
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// A core/v1 Event on the resource, as `kubectl describe` shows them.
    public func record<R: CheResource>(_ resource: R, reason: String, message: String, warning: Bool) async {
        let now = Engine.now()
        let event: JSON = [
            "apiVersion": "v1", "kind": "Event",
            "metadata": ["name": .string("\(resource.metadata.name).\(String(UInt64.random(in: 0...UInt64.max), radix: 16))"),
                         "namespace": .string(namespace), "labels": ["app.kubernetes.io/part-of": "che-backup"]],
            "involvedObject": ["apiVersion": "org.eclipse.che/v1", "kind": .string(R.kind.rawValue), "name": .string(resource.metadata.name),
                               "namespace": .string(namespace), "uid": resource.metadata.uid.map { JSON.string($0) } ?? .null],
            "reason": .string(reason), "message": .string(message), "type": .string(warning ? "Warning" : "Normal"),
            "source": ["component": "che-backup-controller"], "reportingComponent": "che-backup-controller",
            "firstTimestamp": .string(now), "lastTimestamp": .string(now), "count": 1,
        ]
        do { _ = try await client.create(.events, event, namespace: namespace) } catch {
            logger.warning("cannot record the event \(reason) on \(R.kind.rawValue) \(resource.metadata.name): \(describe(error))")
        }
    }

    // MARK: SecretStore

    public func secret(_ name: String) async throws -> Secret? { try await get(Secret.self, name) }

    public func save(_ secret: Secret) async throws { try await create(secret, replace: true) }
}
