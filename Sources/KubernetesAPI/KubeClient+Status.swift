import Foundation

extension KubeClient {
    /// Changes an object's `status`, written only through its `/status` subresource with the
    /// resourceVersion just read: `mutate` gets the whole fresh object and changes its status.
    /// When someone else wrote in between (409) the object is read again and `mutate` applied
    /// again (at most `attempts` times). Returns the object as stored; when `mutate` changes
    /// nothing, nothing is written. `observedGeneration` is the caller's business.
    public func updateStatus(_ r: KubeResource, _ name: String, namespace: String? = nil, attempts: Int = 10,
                             _ mutate: @Sendable (inout JSON) throws -> Void) async throws -> JSON {
        var attempt = 0
        while true {
            attempt += 1
            let current = try await get(r, name, namespace: namespace)
            var changed = current
            try mutate(&changed)
            if changed["status"] == current["status"] { return current }
            // Only status goes to /status: a mutation of anything else must not look like it was stored.
            var write = current
            write["status"] = changed["status"]
            do {
                return try await replace(r, write, namespace: namespace, subresource: "status")
            } catch let error as KubeError where error.code == .conflict && attempt < max(attempts, 1) {
                logger.debug("status write conflicted, reading again",
                             metadata: ["object": "\(describe(r, scope(r, namespace), name))", "attempt": "\(attempt)"])
                try await Task.sleep(for: .milliseconds(Int.random(in: 10...50) * attempt))
            }
        }
    }

    /// Sets the replica count through the object's `scale` subresource (as `kubectl scale`).
    public func scale(_ r: KubeResource = .deployments, _ name: String, replicas: Int, namespace: String? = nil) async throws {
        guard replicas >= 0 else { throw KubeError(.invalid, "scale \(r) \(name): replicas must not be negative (\(replicas))") }
        _ = try await patch(r, name, ["spec": ["replicas": .int(Int64(replicas))]], type: .merge, namespace: namespace,
                            subresource: "scale")
    }
}
