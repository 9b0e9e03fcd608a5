import Foundation
import KubernetesAPI

/// What the injected container looks like: the image, the agents' token Secret, the ports each
/// role prefers, resources.
public struct InjectionSettings: Sendable {
    public var agentImage: String
    public var imagePullPolicy = "IfNotPresent"
    /// The Secret holding the agents' token (key `token`), mounted read-only.
    public var tokenSecret = "che-backup-agent-token"
    /// The port each role listens on, unless a container of the pod already uses it (then the
    /// next free one).
    public var ports = ["postgres": 7001, "files": 7002]
    public var resources: JSON = ["requests": ["cpu": "50m", "memory": "64Mi"], "limits": ["memory": "512Mi"]]

    public init(agentImage: String) { self.agentImage = agentImage }
}

/// The outcome for one pod (or pod template).
public enum InjectionOutcome: Sendable, Equatable {
    /// No `chebackup.eclipse.org/inject` label.
    case notRequested
    /// An agent is already there (the container named): nothing to change.
    case alreadyInjected(container: String)
    /// Asked for, but not possible as asked: the pod is left untouched, with this warning.
    case skipped(warning: String)
    /// The operations that add the agent, relative to the pod (or template) object.
    case injected(role: String, container: String, operations: [PatchOperation])
}

/// Turns a pod into the JSONPatch that adds the agent sidecar (see the module's terms).
public struct SidecarInjector: Sendable {
    public static let injectLabel = "chebackup.eclipse.org/inject"
    public static let agentLabel = "chebackup.eclipse.org/agent"
    public static let dirsAnnotation = "chebackup.eclipse.org/dirs"
    public static let postgresSecretAnnotation = "chebackup.eclipse.org/postgres-secret"
    /// Set on every injected pod, naming the agent container: a second injection sees it.
    public static let injectedAnnotation = "chebackup.eclipse.org/injected"
    public static let portName = "chebackup-agent"
    static let tokenDirectory = "/etc/chebackup-agent"
    static let roles = ["postgres", "files"]
    /// The image's own user (the Containerfile's `USER 1001`).
    static let agentUser: Int64 = 1001

    public let settings: InjectionSettings

    public init(settings: InjectionSettings) { self.settings = settings }

    /// `pod` is a Pod, or a pod template (`metadata` and `spec`).
    public func inject(into pod: JSON) -> InjectionOutcome {
        let labels = pod[path: "metadata", "labels"]?.object ?? [:]
        let annotations = pod[path: "metadata", "annotations"]?.object ?? [:]
        guard let requested = labels[Self.injectLabel] else { return .notRequested }
        let spec = pod["spec"] ?? [:]
        let containers = spec["containers"]?.array ?? []
        if let existing = annotations[Self.injectedAnnotation]?.string,
           containers.contains(where: { $0["name"]?.string == existing }) {
            return .alreadyInjected(container: existing)
        }
        if let agent = containers.first(where: Self.runsAgent) {
            return .alreadyInjected(container: agent["name"]?.string ?? "?")
        }
        guard let role = requested.string, Self.roles.contains(role) else {
            return .skipped(warning: "label \(Self.injectLabel) must be postgres or files, not \(Self.quoted(requested.string ?? "\(requested)")): no agent injected")
        }
        do {
            return try plan(role: role, pod: pod, spec: spec, containers: containers, annotations: annotations)
        } catch let error as InjectionError {
            return .skipped(warning: "\(error.message): no \(role) agent injected")
        } catch {
            return .skipped(warning: "\(error): no \(role) agent injected")
        }
    }

    private func plan(role: String, pod: JSON, spec: JSON, containers: [JSON], annotations: [String: JSON]) throws -> InjectionOutcome {
        guard !containers.isEmpty else { throw InjectionError("the pod has no containers") }
        let allContainers = containers + (spec["initContainers"]?.array ?? []) + (spec["ephemeralContainers"]?.array ?? [])
        let containerName = Self.unique("chebackup-agent", taken: Set(allContainers.compactMap { $0["name"]?.string }))
        let volumes = spec["volumes"]?.array
        let volumeName = Self.unique("chebackup-agent-token", taken: Set((volumes ?? []).compactMap { $0["name"]?.string }))
        let usedPorts = Set(allContainers.flatMap { $0["ports"]?.array ?? [] }.compactMap { $0["containerPort"]?.int })
        var port = Int64(settings.ports[role] ?? 7001)
        while usedPorts.contains(port) { port += 1 }

        var command: [JSON] = ["chebackup-agent", "--role", .string(role), "--listen", .string("0.0.0.0:\(port)"),
                               "--token-file", .string("\(Self.tokenDirectory)/token")]
        var mounts: [JSON] = [["name": .string(volumeName), "mountPath": .string(Self.tokenDirectory), "readOnly": true]]
        var env: [JSON] = []
        var securityContext: JSON = ["allowPrivilegeEscalation": false, "capabilities": ["drop": ["ALL"]],
                                     "runAsNonRoot": true, "seccompProfile": ["type": "RuntimeDefault"]]
        let podUser = spec[path: "securityContext", "runAsUser"]?.int
        switch role {
        case "files":
            guard let text = annotations[Self.dirsAnnotation]?.string else {
                throw InjectionError("a files agent needs the annotation \(Self.dirsAnnotation) (NAME=PATH[,NAME=PATH…])")
            }
            let dirs = try Self.parseDirs(text)
            var owner: JSON?
            for dir in dirs {
                guard let (container, mount) = Self.mount(of: dir.path, in: containers) else {
                    throw InjectionError("directory \(dir.name)=\(dir.path) of \(Self.dirsAnnotation) is not a mountPath of the pod's containers")
                }
                if dir.path == Self.tokenDirectory || dir.path.hasPrefix(Self.tokenDirectory + "/") {
                    throw InjectionError("directory \(dir.path) of \(Self.dirsAnnotation) is where the agent's token goes")
                }
                owner = owner ?? container
                var copied: JSON = ["name": mount["name"] ?? "", "mountPath": .string(dir.path)]
                for key in ["subPath", "subPathExpr", "readOnly"] { copied[key] = mount[key] }
                mounts.append(copied)
                command += ["--dir", .string("\(dir.name)=\(dir.path)")]
            }
            // The agent reads and restores the files as the container that owns them runs.
            let user = owner?[path: "securityContext", "runAsUser"]?.int ?? podUser
            if user == 0 {
                throw InjectionError("the container owning \(dirs[0].path) runs as root; the agent runs as non-root and could not read or restore its files")
            }
            if let user { securityContext["runAsUser"] = .int(user) }
            if let group = owner?[path: "securityContext", "runAsGroup"]?.int, group != 0 { securityContext["runAsGroup"] = .int(group) }
        default:
            guard let secret = annotations[Self.postgresSecretAnnotation]?.string else {
                throw InjectionError("a postgres agent needs the annotation \(Self.postgresSecretAnnotation) (the Secret with keys user and password)")
            }
            guard Self.isDNSSubdomain(secret) else {
                throw InjectionError("annotation \(Self.postgresSecretAnnotation) must name a Secret, not \(Self.quoted(secret))")
            }
            env = [["name": "PGHOST", "value": "127.0.0.1"],
                   ["name": "PGPORT", "value": .string(String(Self.postgresPort(in: containers)))],
                   ["name": "PGUSER", "valueFrom": ["secretKeyRef": ["name": .string(secret), "key": "user"]]],
                   ["name": "PGPASSWORD", "valueFrom": ["secretKeyRef": ["name": .string(secret), "key": "password"]]]]
            if podUser == 0 { securityContext["runAsUser"] = .int(Self.agentUser) }
        }

        var container: JSON = [
            "name": .string(containerName), "image": .string(settings.agentImage), "imagePullPolicy": .string(settings.imagePullPolicy),
            "command": .array(command),
            "ports": [["name": .string(Self.portName), "containerPort": .int(port), "protocol": "TCP"]],
            "readinessProbe": ["tcpSocket": ["port": .string(Self.portName)], "periodSeconds": 10],
            "resources": settings.resources, "securityContext": securityContext, "volumeMounts": .array(mounts),
        ]
        if !env.isEmpty { container["env"] = .array(env) }
        let volume: JSON = ["name": .string(volumeName),
                            "secret": ["secretName": .string(settings.tokenSecret), "defaultMode": .int(0o440),
                                       "items": [["key": "token", "path": "token"]]]]

        var operations: [PatchOperation] = []
        if pod["metadata"] == nil {
            operations.append(.add(JSONPointer(["metadata"]), [:]))
        }
        operations += Self.addMember(Self.agentLabel, .string(role), to: pod[path: "metadata", "labels"], at: JSONPointer(["metadata", "labels"]))
        operations += Self.addMember(Self.injectedAnnotation, .string(containerName), to: pod[path: "metadata", "annotations"],
                                     at: JSONPointer(["metadata", "annotations"]))
        operations.append(.add(JSONPointer(["spec", "containers", "-"]), container))
        if volumes == nil {
            operations.append(.add(JSONPointer(["spec", "volumes"]), [volume]))
        } else {
            operations.append(.add(JSONPointer(["spec", "volumes", "-"]), volume))
        }
        return .injected(role: role, container: containerName, operations: operations)
    }

    // MARK: - Pieces

    /// A container that already runs the agent (injected by hand or by the old kustomize component).
    static func runsAgent(_ container: JSON) -> Bool {
        let argv = (container["command"]?.array ?? []) + (container["args"]?.array ?? [])
        return argv.first?.string.map { $0 == "chebackup-agent" || $0.hasSuffix("/chebackup-agent") } ?? false
    }

    /// One member added to an object that may not exist yet.
    static func addMember(_ key: String, _ value: JSON, to object: JSON?, at pointer: JSONPointer) -> [PatchOperation] {
        object?.object == nil ? [.add(pointer, [key: value])] : [.add(pointer.appending(key), value)]
    }

    static func unique(_ base: String, taken: Set<String>) -> String {
        if !taken.contains(base) { return base }
        var n = 2
        while taken.contains("\(base)-\(n)") { n += 1 }
        return "\(base)-\(n)"
    }

    struct Dir: Equatable { var name: String; var path: String }

    /// `NAME=PATH[,NAME=PATH…]`: names as the agent's parts (`files/NAME`), paths absolute.
    static func parseDirs(_ text: String) throws -> [Dir] {
        var dirs: [Dir] = []
        for entry in text.split(separator: ",", omittingEmptySubsequences: false).map({ $0.trimmingCharacters(in: .whitespaces) }) {
            guard let eq = entry.firstIndex(of: "=") else {
                throw InjectionError("annotation \(dirsAnnotation) takes NAME=PATH[,NAME=PATH…], not \(quoted(text))")
            }
            let name = String(entry[..<eq]), raw = String(entry[entry.index(after: eq)...])
            guard isPartName(name) else {
                throw InjectionError("annotation \(dirsAnnotation): \(quoted(name)) is not a name (lower-case letters, digits, - and .)")
            }
            guard raw.hasPrefix("/"), !raw.split(separator: "/").contains(".."), raw.allSatisfy({ !$0.isNewline && $0 != "\0" }) else {
                throw InjectionError("annotation \(dirsAnnotation): the path of \(name) must be absolute, not \(quoted(raw))")
            }
            guard !dirs.contains(where: { $0.name == name }) else {
                throw InjectionError("annotation \(dirsAnnotation) names \(name) twice")
            }
            dirs.append(Dir(name: name, path: normalized(raw)))
        }
        return dirs
    }

    static func normalized(_ path: String) -> String {
        let trimmed = "/" + path.split(separator: "/").joined(separator: "/")
        return trimmed
    }

    /// The container and volumeMount whose mountPath is `path`.
    static func mount(of path: String, in containers: [JSON]) -> (JSON, JSON)? {
        for container in containers {
            for mount in container["volumeMounts"]?.array ?? [] where mount["mountPath"]?.string.map(normalized) == path {
                return (container, mount)
            }
        }
        return nil
    }

    /// The port Postgres listens on in the pod: a container port named postgres or postgresql,
    /// or 5432.
    static func postgresPort(in containers: [JSON]) -> Int64 {
        let ports = containers.flatMap { $0["ports"]?.array ?? [] }
        return ports.first(where: { ["postgres", "postgresql"].contains($0["name"]?.string ?? "") })?["containerPort"]?.int ?? 5432
    }

    static func isPartName(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, let last = s.unicodeScalars.last, s.utf8.count <= 63 else { return false }
        let allowed = { (c: Unicode.Scalar) in ("a"..."z").contains(c) || ("0"..."9").contains(c) || c == "-" || c == "." || c == "_" }
        return s.unicodeScalars.allSatisfy(allowed) && first != "-" && first != "." && last != "-" && last != "."
    }

    static func isDNSSubdomain(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 253 else { return false }
        return s.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            guard let first = label.unicodeScalars.first, let last = label.unicodeScalars.last else { return false }
            let ok = { (c: Unicode.Scalar) in ("a"..."z").contains(c) || ("0"..."9").contains(c) }
            return label.unicodeScalars.allSatisfy { ok($0) || $0 == "-" } && ok(first) && ok(last)
        }
    }

    /// A value quoted for a message, control characters escaped, cut at 80 characters.
    static func quoted(_ s: String) -> String {
        let escaped = s.unicodeScalars.map { $0.properties.generalCategory == .control ? $0.escaped(asASCII: true) : String($0) }.joined()
        return "\"" + (escaped.count > 80 ? String(escaped.prefix(80)) + "…" : escaped) + "\""
    }
}
