import AgentClient
import Foundation
import LineProtocol
import Repository

/// The users' workspace claims in a backup and a restore: each through a short-lived agent of
/// its own (`WorkspaceVolumes.withAgent`), at most `parallelism` at once; their records (what
/// recreates a missing claim and its namespace) in the part `che/workspace-claims`.
extension Job {
    public static let workspaceRecordsPart = "che/workspace-claims"

    func workspaceVolumes() throws -> any WorkspaceVolumes {
        guard let volumes = drivers.workspaces else {
            throw ControllerError(.invalidResource, "includeWorkspaces: workspace claims live in the users' namespaces of a cluster; this mode has none (use Kubernetes mode)")
        }
        return volumes
    }

    /// Every claim's part, and the records part. One claim that fails fails the backup (no
    /// snapshot is written without it).
    func backupWorkspaces(into repo: Repository, installation: String, options: BackupOptions) async throws -> [Part] {
        let volumes = try workspaceVolumes()
        stage("Finding the users' workspace claims")
        let claims = try await volumes.claims()
        let records = try await volumes.backupRecords(of: claims, into: repo, part: Self.workspaceRecordsPart, options: options)
        let (server, stage) = (self.server, self.stage)
        let parts = try await Self.forEach(claims, atMost: volumes.parallelism) { claim in
            try await volumes.withAgent(for: claim, readOnly: true, stage: stage) { agent in
                try await connect(agent) { session in
                    stage("Backing up the workspace claim \(claim) through its agent")
                    return try await session.backup(url: server.url, secrets: server.secrets, parts: [claim.part], installation: installation)
                }
            }
        }
        return records + parts.flatMap { $0 }
    }

    /// Restores the snapshot's claims; returns one warning per claim skipped because it is in use.
    func restoreWorkspaces(of snap: Snapshot, id: SnapshotID, from repo: Repository) async throws -> [String] {
        let claims = snap.parts.compactMap { WorkspaceClaim(part: $0.name) }.sorted()
        guard !claims.isEmpty else { return [] }
        let volumes = try workspaceVolumes()
        let part = snap.parts.first { $0.name == Self.workspaceRecordsPart }
        let records = part == nil ? [:] : try await volumes.records(part!, from: repo)
        stage("Restoring \(claims.count) workspace claim\(claims.count == 1 ? "" : "s")")
        let (server, stage) = (self.server, self.stage)
        let outcomes = try await Self.forEach(claims, atMost: volumes.parallelism) { claim -> String? in
            if let warning = try await volumes.prepareRestore(claim, record: records[claim]) { return warning }
            try await volumes.withAgent(for: claim, readOnly: false, stage: stage) { agent in
                try await connect(agent) { session in
                    stage("Restoring the workspace claim \(claim) through its agent")
                    _ = try await session.restore(url: server.url, secrets: server.secrets, snapshot: id, parts: [claim.part])
                }
            }
            return nil
        }
        return outcomes.compactMap { $0 }
    }

    /// `body` for each item, at most `limit` at once; results in the items' order. The first
    /// failure cancels the rest and is thrown.
    public static func forEach<Item: Sendable, Result: Sendable>(_ items: [Item], atMost limit: Int,
                                                         _ body: @escaping @Sendable (Item) async throws -> Result) async throws -> [Result] {
        try await withThrowingTaskGroup(of: (Int, Result).self) { group in
            var results = [Result?](repeating: nil, count: items.count)
            var next = 0
            for _ in 0..<min(max(limit, 1), items.count) {
                let (index, item) = (next, items[next])
                group.addTask { (index, try await body(item)) }
                next += 1
            }
            while let (index, result) = try await group.next() {
                results[index] = result
                if next < items.count {
                    let (index, item) = (next, items[next])
                    group.addTask { (index, try await body(item)) }
                    next += 1
                }
            }
            return results.compactMap { $0 }
        }
    }
}
