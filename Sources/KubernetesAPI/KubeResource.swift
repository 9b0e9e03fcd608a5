import Foundation

/// A kind of Kubernetes object and where the API serves it: group ("" for the core group),
/// version, plural (the path segment), kind, and whether its objects live in a namespace.
public struct KubeResource: Sendable, Hashable, CustomStringConvertible {
    public var group: String
    public var version: String
    public var plural: String
    public var kind: String
    public var namespaced: Bool

    public init(group: String, version: String, plural: String, kind: String, namespaced: Bool = true) {
        self.group = group
        self.version = version
        self.plural = plural
        self.kind = kind
        self.namespaced = namespaced
    }

    /// `v1` for the core group, else `group/version`.
    public var apiVersion: String { group.isEmpty ? version : "\(group)/\(version)" }

    /// `plural.group` as kubectl names it (`plural` alone for the core group).
    public var description: String { group.isEmpty ? plural : "\(plural).\(group)" }

    /// The API path of the collection (`name` nil) or of one object, optionally a subresource.
    /// `namespace` is ignored for cluster-scoped kinds; nil or "" for a namespaced kind means
    /// across all namespaces (lists and watches only).
    public func path(namespace: String?, name: String? = nil, subresource: String? = nil) -> String {
        var path = group.isEmpty ? "/api/\(version)" : "/apis/\(group)/\(version)"
        if namespaced, let namespace, !namespace.isEmpty { path += "/namespaces/" + Self.segment(namespace) }
        path += "/" + plural
        if let name {
            path += "/" + Self.segment(name)
            if let subresource { path += "/" + Self.segment(subresource) }
        }
        return path
    }

    /// A path segment, percent-encoded so that a name cannot reach another path.
    static func segment(_ text: String) -> String {
        let allowed = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~:@")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }
}

extension KubeResource {
    public static let namespaces = core("namespaces", "Namespace", namespaced: false)
    public static let secrets = core("secrets", "Secret")
    public static let configMaps = core("configmaps", "ConfigMap")
    public static let pods = core("pods", "Pod")
    public static let services = core("services", "Service")
    public static let events = core("events", "Event")
    public static let persistentVolumeClaims = core("persistentvolumeclaims", "PersistentVolumeClaim")
    public static let serviceAccounts = core("serviceaccounts", "ServiceAccount")
    public static let deployments = KubeResource(group: "apps", version: "v1", plural: "deployments", kind: "Deployment")
    public static let statefulSets = KubeResource(group: "apps", version: "v1", plural: "statefulsets", kind: "StatefulSet")
    public static let jobs = KubeResource(group: "batch", version: "v1", plural: "jobs", kind: "Job")
    public static let leases = KubeResource(group: "coordination.k8s.io", version: "v1", plural: "leases", kind: "Lease")
    public static let mutatingWebhookConfigurations = KubeResource(
        group: "admissionregistration.k8s.io", version: "v1", plural: "mutatingwebhookconfigurations",
        kind: "MutatingWebhookConfiguration", namespaced: false)

    /// Eclipse Che's own installation resource.
    public static let cheClusters = KubeResource(group: "org.eclipse.che", version: "v2", plural: "checlusters", kind: "CheCluster")
    public static let backupServerConfigurations = che("chebackupserverconfigurations", "CheBackupServerConfiguration")
    public static let clusterBackups = che("checlusterbackups", "CheClusterBackup")
    public static let clusterRestores = che("checlusterrestores", "CheClusterRestore")
    public static let backupSchedules = che("checlusterbackupschedules", "CheClusterBackupSchedule")

    private static func core(_ plural: String, _ kind: String, namespaced: Bool = true) -> KubeResource {
        KubeResource(group: "", version: "v1", plural: plural, kind: kind, namespaced: namespaced)
    }

    private static func che(_ plural: String, _ kind: String) -> KubeResource {
        KubeResource(group: "org.eclipse.che", version: "v1", plural: plural, kind: kind)
    }
}
