import ControllerCore
import Foundation
import KubernetesAPI
import Logging
import Repository
import Storage

/// Che's own objects in the namespace: the CheCluster resource(s) and the Secrets and ConfigMaps
/// labelled `app.kubernetes.io/part-of=che.eclipse.org`. Backed up as a tree of JSON files
/// (`checlusters/NAME.json`, `secrets/NAME.json`, `configmaps/NAME.json`) without the fields the
/// server sets; restored by deleting the namespace's labelled objects and creating the backed-up
/// ones (Secrets, ConfigMaps, then the CheCluster, its status reset).
struct ClusterObjects: InstallationObjects {
    static let cheLabel = "app.kubernetes.io/part-of=che.eclipse.org"
    /// Kinds in the order a restore creates them.
    static let kinds: [(dir: String, resource: KubeResource, selector: String?)] = [
        ("secrets", .secrets, cheLabel), ("configmaps", .configMaps, cheLabel), ("checlusters", .cheClusters, nil),
    ]

    let client: KubeClient
    let namespace: String
    let logger: Logger

    func info() async throws -> InstallationInfo {
        let clusters = try await client.list(.cheClusters, namespace: namespace).items
        let che = clusters.first
        var domain = che?[path: "spec", "networking", "domain"]?.string ?? ""
        if domain.isEmpty, let url = che?[path: "status", "cheURL"]?.string, let host = URLComponents(string: url)?.host { domain = host }
        return InstallationInfo(id: "\(namespace)/\(che?.name ?? "eclipse-che")", namespace: namespace, domain: domain,
                                cheVersion: che?[path: "status", "cheVersion"]?.string ?? "unknown")
    }

    /// An object as it is backed up: no uid, resourceVersion, generation, timestamps,
    /// managedFields, status or ownerReferences (their owners' uids do not survive a restore:
    /// the Che operator sets them again).
    static func stripped(_ object: JSON, kind: KubeResource) -> JSON {
        var object = object
        object["status"] = nil
        object["apiVersion"] = .string(kind.apiVersion)
        object["kind"] = .string(kind.kind)
        for field in ["uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "ownerReferences",
                      "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds", "finalizers", "generateName"] {
            object["metadata"]?[field] = nil
        }
        return object
    }

    func backup(into repository: Repository, part name: String, options: BackupOptions) async throws -> (parts: [Part], parent: SnapshotID?) {
        let dir = try PrivateDirectory(prefix: "chebackup-objects")
        let tree = dir.path + "/objects"
        for kind in Self.kinds {
            let items = try await client.list(kind.resource, namespace: namespace, labelSelector: kind.selector).items
            try FileManager.default.createDirectory(atPath: "\(tree)/\(kind.dir)", withIntermediateDirectories: true)
            for item in items {
                guard let objectName = item.name else { continue }
                try Self.stripped(item, kind: kind.resource).data(sorted: true)
                    .write(to: URL(fileURLWithPath: "\(tree)/\(kind.dir)/\(objectName).json"))
            }
        }
        let stored = try await repository.storeParts([.path(tree, name: name)], options: options)
        return (stored.parts, stored.parent)
    }

    func restore(_ part: Part, from repository: Repository, relocation: Relocation, stage: @escaping @Sendable (String) -> Void) async throws {
        let dir = try PrivateDirectory(prefix: "chebackup-objects")
        var options = RestoreOptions()
        options.connections = repository.storage.defaultConnections
        _ = try await Restorer(repository: repository, options: options).restoreTree(part, into: dir.path + "/objects")
        // Read everything first: nothing is deleted unless every object can be created.
        var restored: [(KubeResource, [JSON])] = []
        for kind in Self.kinds {
            let folder = "\(dir.path)/objects/\(kind.dir)"
            let files = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasSuffix(".json") }.sorted()
            var objects: [JSON] = []
            for file in files {
                let text: String
                do { text = try String(contentsOfFile: "\(folder)/\(file)", encoding: .utf8) } catch {
                    throw ControllerError(.store, "cannot read the restored object \(kind.dir)/\(file): \(error.localizedDescription)")
                }
                var object = try JSON(data: Data(relocation.rewrite(text).utf8))
                object[path: ["metadata", "namespace"]] = .string(namespace)
                objects.append(object)
            }
            restored.append((kind.resource, objects))
        }
        for (resource, objects) in restored {
            let selector = Self.kinds.first { $0.resource == resource }?.selector
            let existing = try await client.list(resource, namespace: namespace, labelSelector: selector).items.compactMap(\.name)
            stage("Replacing \(resource.plural): deleting \(existing.count), creating \(objects.count)")
            for name in existing { _ = try await client.delete(resource, name, namespace: namespace) }
            for name in existing { try await waitGone(resource, name) }
            for object in objects { _ = try await client.create(resource, object, namespace: namespace) }
        }
    }

    /// A deleted object can linger while finalizers run; creating its replacement must wait.
    func waitGone(_ resource: KubeResource, _ name: String) async throws {
        for _ in 0..<600 {
            guard try await client.getIfPresent(resource, name, namespace: namespace) != nil else { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ControllerError(.store, "\(resource.kind) \(name) was deleted but is still there after 60 seconds (a finalizer?)")
    }
}
