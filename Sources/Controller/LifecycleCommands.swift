import ArgumentParser
import Foundation
import Repository
import Storage

/// The retention flags of `repo forget`, as restic's.
struct RetentionOptions: ParsableArguments {
    @Option(help: "Keep the last N snapshots (-1: all).") var keepLast: Int?
    @Option(help: "Keep the last N hourly snapshots.") var keepHourly: Int?
    @Option(help: "Keep the last N daily snapshots.") var keepDaily: Int?
    @Option(help: "Keep the last N weekly snapshots (ISO weeks).") var keepWeekly: Int?
    @Option(help: "Keep the last N monthly snapshots.") var keepMonthly: Int?
    @Option(help: "Keep the last N yearly snapshots.") var keepYearly: Int?
    @Option(help: "Keep every snapshot within this long of the newest one (1y2m3d4h).") var keepWithin: String?
    @Option(help: "Keep snapshots having all these tags (T or T1,T2; repeatable).") var keepTag: [String] = []

    func policy() throws -> RetentionPolicy {
        var policy = RetentionPolicy()
        policy.last = keepLast ?? 0
        policy.hourly = keepHourly ?? 0
        policy.daily = keepDaily ?? 0
        policy.weekly = keepWeekly ?? 0
        policy.monthly = keepMonthly ?? 0
        policy.yearly = keepYearly ?? 0
        if let keepWithin {
            do { policy.within = try Retention.parseDuration(keepWithin) } catch let error as RetentionError {
                throw ValidationError("--keep-within: \(error.message)")
            }
        }
        policy.tags = keepTag.map { $0.split(separator: ",").map(String.init) }
        do { try policy.validate() } catch let error as RetentionError { throw ValidationError(error.message) }
        return policy
    }

    var given: Bool {
        [keepLast, keepHourly, keepDaily, keepWeekly, keepMonthly, keepYearly].contains { $0 != nil } || keepWithin != nil || !keepTag.isEmpty
    }
}

/// `--max-unused 5%` or `unlimited`.
func parseMaxUnused(_ text: String) throws -> Double? {
    if text == "unlimited" { return nil }
    guard text.hasSuffix("%"), let value = Double(text.dropLast()), value >= 0, value < 100 else {
        throw ValidationError("--max-unused takes a percentage below 100 (5%) or unlimited, not \"\(text)\"")
    }
    return value
}

struct RepoForget: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forget", abstract: "Remove snapshots: the ones given, or those a retention policy does not keep.",
        discussion: """
        Snapshots are grouped by host and part names; the policy is applied to each group (restic's rules: \
        each --keep-* bucket keeps the newest snapshot of each hour, day, ISO week, month or year, up to N of \
        them, and the union of all buckets is kept). Only snapshot files are removed: their data goes with \
        --prune or a later `repo prune`. It holds an exclusive lock.
        """)
    @OptionGroup var repo: RepositoryOptionsGroup
    @OptionGroup var retention: RetentionOptions
    @Argument(help: "Snapshot ids (unique prefixes) to remove, instead of a policy.") var ids: [String] = []
    @Option(help: "Only consider snapshots with this tag (repeatable: all of them).") var tag: [String] = []
    @Flag(help: "With no --keep-* option, remove every snapshot considered.") var keepNone = false
    @Flag(help: "Show what would be removed; remove nothing.") var dryRun = false
    @Flag(help: "Prune afterwards (in the same lock).") var prune = false
    @Option(help: "With --prune: unused space tolerated (5%, or unlimited).") var maxUnused = "5%"
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        if !ids.isEmpty && (retention.given || keepNone) { throw ValidationError("give snapshot ids or a policy, not both") }
        if ids.isEmpty && !retention.given && !keepNone {
            throw ValidationError("no policy given, nothing would be kept: use --keep-last, --keep-daily, …, or --keep-none to remove every snapshot")
        }
        if retention.given && keepNone { throw ValidationError("--keep-none and --keep-* options contradict each other") }
        _ = try retention.policy()
        _ = try parseMaxUnused(maxUnused)
    }

    struct Row: Encodable {
        let id: String
        let time: Date
        let hostname: String
        let tags: [String]
        let keep: Bool
        let reasons: [String]
    }

    func run() async throws {
        try await runReportingErrors { pool in
            try await repo.withLockedRepository(pool: pool, exclusive: true, operation: "forget") { repository in
                let all = try await repository.listSnapshots()
                var rows: [Row] = []
                if !ids.isEmpty {
                    for text in ids {
                        let (id, snapshot) = try await repository.resolveSnapshot(text)
                        rows.append(Row(id: id.hex, time: snapshot.time, hostname: snapshot.hostname, tags: snapshot.tags, keep: false, reasons: ["given"]))
                    }
                } else {
                    let considered = all.filter { pair in tag.allSatisfy { pair.snapshot.tags.contains($0) } }
                    let groups = Dictionary(grouping: considered) { "\($0.snapshot.hostname) \($0.snapshot.parts.map(\.name).sorted().joined(separator: ","))" }
                    let policy = try retention.policy()
                    for key in groups.keys.sorted() {
                        let members = groups[key]!
                        let byID = Dictionary(uniqueKeysWithValues: members.map { ($0.id.hex, $0.snapshot) })
                        let decisions = keepNone
                            ? members.map { RetentionDecision(snapshot: RetentionSnapshot(id: $0.id.hex, time: $0.snapshot.time, tags: $0.snapshot.tags), keep: false, reasons: ["--keep-none"]) }
                            : Retention.apply(members.map { RetentionSnapshot(id: $0.id.hex, time: $0.snapshot.time, tags: $0.snapshot.tags) },
                                              policy: policy, timeZone: .current, now: Date())
                        for d in decisions {
                            let s = byID[d.snapshot.id]!
                            rows.append(Row(id: d.snapshot.id, time: s.time, hostname: s.hostname, tags: s.tags, keep: d.keep,
                                            reasons: d.keep ? d.reasons : (d.reasons.isEmpty ? ["no policy bucket keeps it"] : d.reasons)))
                        }
                    }
                }
                let remove = rows.filter { !$0.keep }.compactMap { ObjectID(hex: $0.id) }
                if json {
                    printOut(Format.json(rows))
                } else {
                    printTable(rows)
                    printOut("\(rows.filter(\.keep).count) kept, \(remove.count) \(dryRun ? "would be removed" : "removed")")
                }
                guard !dryRun else { return }
                try await repository.forget(remove)
                if prune {
                    var options = Repository.PruneOptions()
                    options.maxUnusedPercent = try parseMaxUnused(maxUnused)
                    options.connections = repo.connections ?? repository.storage.defaultConnections
                    let report = try await repository.prune(options)
                    if !json { RepoPrune.print(report, dryRun: false) }
                }
            }
        }
    }

    func printTable(_ rows: [Row]) {
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        printOut("ID        Time                 Host                 Tags          Decision  Why")
        for row in rows {
            let tags = row.tags.joined(separator: ",")
            printOut("\(row.id.prefix(8))  \(formatter.string(from: row.time))  \(pad(row.hostname, 20))  \(pad(tags, 12))  \(row.keep ? "keep    " : "remove  ")  \(row.reasons.joined(separator: ", "))")
        }
    }

    func pad(_ s: String, _ n: Int) -> String { s.count >= n ? String(s.prefix(n)) : s + String(repeating: " ", count: n - s.count) }
}

struct RepoPrune: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune", abstract: "Delete the data no snapshot needs, repacking partly used packs.",
        discussion: """
        It holds an exclusive lock (no backup may run meanwhile) and is safe to stop at any point: new packs and \
        index files are stored before anything is deleted. A server that refuses deletes (append-only) is found \
        out before anything is written.
        """)
    @OptionGroup var repo: RepositoryOptionsGroup
    @Option(help: "Unused space tolerated afterwards, as a percentage of the used space (5%), or unlimited (only packs with nothing used go).")
    var maxUnused = "5%"
    @Flag(help: "Show what would be done; change nothing.") var dryRun = false
    @Flag(help: "Print JSON.") var json = false

    func validate() throws { _ = try parseMaxUnused(maxUnused) }

    struct Summary: Encodable {
        let packsBefore: Int, bytesBefore: Int64, packsAfter: Int, bytesAfter: Int64
        let packsDeleted: Int, packsRepacked: Int, packsWritten: Int, unindexedPacksDeleted: Int, usedBytes: Int64, dryRun: Bool
    }

    func run() async throws {
        try await runReportingErrors { pool in
            try await repo.withLockedRepository(pool: pool, exclusive: true, operation: "prune") { repository in
                var options = Repository.PruneOptions()
                options.maxUnusedPercent = try parseMaxUnused(maxUnused)
                options.dryRun = dryRun
                options.connections = repo.connections ?? repository.storage.defaultConnections
                let report = try await repository.prune(options)
                if json {
                    printOut(Format.json(Summary(packsBefore: report.packsBefore, bytesBefore: report.bytesBefore, packsAfter: report.packsAfter,
                                                 bytesAfter: report.bytesAfter, packsDeleted: report.packsDeleted, packsRepacked: report.packsRepacked,
                                                 packsWritten: report.packsWritten, unindexedPacksDeleted: report.unindexedPacksDeleted,
                                                 usedBytes: report.usedBytes, dryRun: dryRun)))
                } else {
                    Self.print(report, dryRun: dryRun)
                }
            }
        }
    }

    static func print(_ r: Repository.PruneReport, dryRun: Bool) {
        let verb = dryRun ? "would " : ""
        printOut("used: \(r.usedBlobs) blobs, \(Format.bytes(r.usedBytes))")
        printOut("\(verb)delete \(r.packsDeleted) unused packs and \(r.unindexedPacksDeleted) unindexed ones, \(verb)repack \(r.packsRepacked) into \(dryRun ? "new" : String(r.packsWritten) + " new")")
        printOut("before: \(r.packsBefore) packs, \(Format.bytes(r.bytesBefore)); after: \(r.packsAfter) packs, \(Format.bytes(r.bytesAfter))\(dryRun ? " (estimated)" : "")")
    }
}
