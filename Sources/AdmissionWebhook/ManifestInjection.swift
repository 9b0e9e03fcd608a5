import Foundation
import KubernetesAPI
import Yams

/// `chebackup inject -f`: the webhook's change written into manifests, as `istioctl kube-inject`
/// does, for clusters managed from Git. Every document of a YAML stream is read; a Pod, or the
/// pod template of a Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or CronJob that asks for
/// an agent gets it, by the same `SidecarInjector` and the same JSONPatch the webhook sends.
/// Other documents pass through unchanged (their keys sorted).
public struct ManifestInjector: Sendable {
    public let injector: SidecarInjector

    public init(injector: SidecarInjector) { self.injector = injector }

    public struct Result: Sendable {
        public var yaml: String
        /// One line per injected, skipped or already injected workload.
        public var notes: [String]
        public var warnings: [String]
    }

    /// Where each kind keeps its pod (template).
    static func podPointer(kind: String) -> JSONPointer? {
        switch kind {
        case "Pod": return JSONPointer()
        case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job": return JSONPointer(["spec", "template"])
        case "CronJob": return JSONPointer(["spec", "jobTemplate", "spec", "template"])
        default: return nil
        }
    }

    /// The documents of a YAML stream as JSON values.
    public static func documents(yaml text: String) throws -> [JSON] {
        do {
            // Yams' document sequence drops a parse error; its parser does not.
            let parser = try Parser(yaml: text)
            var documents: [JSON] = []
            while let node = try parser.nextRoot() { documents.append(try YAMLJSON.json(from: node)) }
            return documents
        } catch let error as InjectionError {
            throw error
        } catch {
            throw InjectionError("the manifest is not YAML: \(String(describing: error).split(separator: "\n").first ?? "")")
        }
    }

    public func inject(yaml text: String) throws -> Result {
        let documents = try Self.documents(yaml: text)
        var notes: [String] = [], warnings: [String] = []
        var out: [JSON] = []
        for document in documents where document != .null {
            let kind = document["kind"]?.string ?? "?"
            let name = "\(kind) \(document[path: "metadata", "name"]?.string ?? "?")"
            guard let pointer = Self.podPointer(kind: kind), let pod = document[path: pointer.tokens], pod.object != nil else {
                out.append(document)
                continue
            }
            switch injector.inject(into: pod) {
            case .notRequested:
                out.append(document)
            case .alreadyInjected(let container):
                notes.append("\(name): agent \(container) already there")
                out.append(document)
            case .skipped(let warning):
                warnings.append("\(name): \(warning)")
                out.append(document)
            case .injected(let role, let container, let operations):
                out.append(try JSONPatch.apply(operations.map { $0.under(pointer) }, to: document))
                notes.append("\(name): \(role) agent injected as container \(container)")
            }
        }
        let encoder = YAMLEncoder()
        encoder.options.sortKeys = true
        let rendered = try out.map { try encoder.encode($0) }
        return Result(yaml: rendered.joined(separator: "---\n"), notes: notes, warnings: warnings)
    }
}

/// YAML nodes as JSON values by their resolved tags, so a quoted `"true"` or `"5432"` stays a
/// string (decoding through `Decodable` would guess from the text).
enum YAMLJSON {
    static func json(from node: Node) throws -> JSON {
        switch node {
        case .scalar(let scalar):
            switch Tag.Name(rawValue: node.tag.rawValue) {
            case .null: return .null
            case .bool: return Bool.construct(from: scalar).map(JSON.bool) ?? .string(scalar.string)
            case .int: return Int64(scalar.string).map(JSON.int) ?? Int.construct(from: scalar).map { .int(Int64($0)) } ?? .string(scalar.string)
            case .float: return Double.construct(from: scalar).map(JSON.double) ?? .string(scalar.string)
            default: return .string(scalar.string)
            }
        case .sequence(let sequence):
            return .array(try sequence.map(json(from:)))
        case .mapping(let mapping):
            var members: [String: JSON] = [:]
            for (key, value) in mapping {
                guard case .scalar(let k) = key else { throw InjectionError("the manifest has a mapping key that is not a string") }
                members[k.string] = try json(from: value)
            }
            return .object(members)
        case .alias:
            throw InjectionError("the manifest uses a YAML alias, which manifests for Kubernetes do not support")
        }
    }
}
