import Foundation
import LineProtocol
import Repository

/// Moving a snapshot to another namespace or domain: the database rows that carry the old domain
/// or the old namespace's service names, and the objects' `namespace` fields, service names and
/// domain, are rewritten to the installation's. Empty when nothing moved.
public struct Relocation: Sendable, Equatable {
    public var from: (namespace: String, domain: String)
    public var to: (namespace: String, domain: String)

    public static func == (a: Relocation, b: Relocation) -> Bool {
        a.from == b.from && a.to == b.to
    }

    /// Compares the snapshot's record with the installation; throws unless `allowed` when they
    /// differ. An installation whose domain is unknown (its CheCluster was deleted) keeps the
    /// snapshot's.
    public init(snapshot: Snapshot, installation: InstallationInfo, allowed: Bool) throws {
        from = (snapshot.metadata["namespace"] ?? installation.namespace, snapshot.metadata["domain"] ?? installation.domain)
        to = (installation.namespace, installation.domain.isEmpty ? from.domain : installation.domain)
        // The snapshot's record comes from the repository: never use it unchecked.
        if let problem = rewrites.lazy.compactMap(\.problem).first {
            throw ControllerError(.refused, "cannot relocate the snapshot: \(problem)")
        }
        if !isEmpty && !allowed {
            throw ControllerError(.refused, "the snapshot was made for namespace \(from.namespace), domain \(from.domain); this installation is namespace \(to.namespace), domain \(to.domain): restore with --relocate to rewrite them")
        }
    }

    public var isEmpty: Bool { from == to }

    /// What the agents rewrite in the database rows.
    public var rewrites: [Rewrite] {
        var out: [Rewrite] = []
        if from.domain != to.domain { out.append(Rewrite(from: from.domain, to: to.domain)) }
        if from.namespace != to.namespace { out.append(Rewrite(from: "\(from.namespace).svc", to: "\(to.namespace).svc")) }
        return out
    }

    /// An object file's text (YAML or JSON) rewritten.
    public func rewrite(_ text: String) -> String {
        var text = text
        if from.namespace != to.namespace {
            let old = NSRegularExpression.escapedPattern(for: from.namespace)
            text = text.replacingOccurrences(of: "namespace: \(old)\\b", with: "namespace: \(to.namespace)", options: .regularExpression)
            text = text.replacingOccurrences(of: "\"namespace\": ?\"\(old)\"", with: "\"namespace\":\"\(to.namespace)\"", options: .regularExpression)
            text = text.replacingOccurrences(of: "\(from.namespace).svc", with: "\(to.namespace).svc")
        }
        if from.domain != to.domain { text = text.replacingOccurrences(of: from.domain, with: to.domain) }
        return text
    }
}
