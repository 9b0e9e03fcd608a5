import ArgumentParser
import Foundation
import Repository
import Storage

struct RepoInit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "init", abstract: "Create a new repository.")
    @OptionGroup var repo: RepositoryOptionsGroup
    @Option(help: "Average chunk size in bytes (a power of two).") var averageChunkSize = ChunkerParameters.default.averageSize
    @Option(help: "Pack size in bytes.") var packSize = RepositoryOptions().packSize
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        try await runReportingErrors { pool in
            var options = RepositoryOptions()
            options.chunker = ChunkerParameters(minSize: averageChunkSize / 4, averageSize: averageChunkSize,
                                                maxSize: averageChunkSize * 4)
            options.packSize = packSize
            let storage = try repo.storage(pool: pool)
            let created = try await Repository.initialize(storage: storage, password: try repo.password(),
                                                          options: options, logger: repo.logger)
            if json {
                printOut(Format.json(["id": created.config.id, "location": storage.location]))
            } else {
                printOut("Created repository \(created.config.id.prefix(10)) at \(storage.location)")
                printOut("Keep the password safe: without it, nobody can read the backups, and there is no way to recover it.")
            }
        }
    }
}

struct RepoBackup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup", abstract: "Back up files and directories, or a stream from standard input.")
    @OptionGroup var repo: RepositoryOptionsGroup
    @Argument(help: "Files or directories; each becomes a part of the snapshot, named after its last path component.")
    var paths: [String] = []
    @Flag(help: "Back up standard input as a stream part.") var stdin = false
    @Option(help: "The name of the stream part read from standard input.") var stdinName = "stdin"
    @Option(help: "Tag the snapshot (repeatable).") var tag: [String] = []
    @Option(help: "Hostname to record (default: this host).") var host: String?
    @Option(help: "Parent snapshot for change detection (default: the latest with the same parts).") var parent: String?
    @Flag(help: "Read every file, even unchanged ones.") var force = false
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        if !stdin && paths.isEmpty { throw ValidationError("nothing to back up: give paths, --stdin, or both") }
        if stdinName.isEmpty || stdinName.contains("/") { throw ValidationError("--stdin-name must be a non-empty name without '/'") }
    }

    func run() async throws {
        try await runReportingErrors { pool in
            try await repo.withLockedRepository(pool: pool, operation: "backup") { repository in
                var sources: [BackupSource] = []
                for path in paths {
                    let absolute = RepositoryURLPath.absolute(path)
                    var st = stat()
                    guard lstat(absolute, &st) == 0 else {
                        throw CLIError("cannot back up \(path): \(String(cString: strerror(errno)))")
                    }
                    let base = (absolute as NSString).lastPathComponent
                    sources.append(.path(absolute, name: base == "/" ? "root" : base))
                }
                if stdin { sources.append(.stream(fd: 0, name: stdinName)) }
                var options = BackupOptions()
                options.tags = tag
                if let host { options.hostname = host }
                options.force = force
                options.connections = repo.connections ?? repository.storage.defaultConnections
                if let parent { options.parent = try await repository.resolveSnapshot(parent).id }
                let progress = ProgressCounters()
                let line = ProgressLine(progress, label: "backup", quiet: repo.quiet || json)
                let started = Date()
                let result: BackupResult
                do {
                    result = try await repository.backup(sources, options: options, progress: progress)
                } catch {
                    line.finish()
                    throw error
                }
                line.finish()
                let elapsed = Date().timeIntervalSince(started)
                let s = result.snapshot
                let total = s.totalBytes
                let new = s.parts.reduce(Int64(0)) { $0 + $1.stats.newBytes }
                if json {
                    printOut(Format.json(BackupSummary(snapshotId: result.id.hex, shortId: result.id.short,
                                                       files: s.parts.reduce(0) { $0 + $1.stats.files },
                                                       unchangedFiles: s.parts.reduce(0) { $0 + $1.stats.unchangedFiles },
                                                       bytes: total, newBytes: new, storedBytes: result.bytesStored,
                                                       packs: result.packsStored, seconds: elapsed)))
                } else {
                    for part in s.parts {
                        printOut("part \(part.name): \(part.stats.files) files, \(part.stats.dirs) dirs, \(Format.bytes(part.stats.bytes)) (\(part.stats.unchangedFiles) unchanged, \(Format.bytes(part.stats.newBytes)) new)")
                    }
                    printOut("stored \(Format.bytes(result.bytesStored)) in \(result.packsStored) packs; \(Format.bytes(total)) processed in \(Format.duration(elapsed)) (\(Format.rate(total, elapsed)))")
                    printOut("Backup snapshot ID: \(result.id.short)")
                }
            }
        }
    }
}

struct BackupSummary: Encodable {
    let snapshotId: String
    let shortId: String
    let files: Int
    let unchangedFiles: Int
    let bytes: Int64
    let newBytes: Int64
    let storedBytes: Int64
    let packs: Int
    let seconds: Double
}

struct RepoSnapshots: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "snapshots", abstract: "List snapshots.")
    @OptionGroup var repo: RepositoryOptionsGroup
    @Flag(help: "Print JSON.") var json = false

    struct Row: Encodable {
        let id: String
        let shortId: String
        let time: Date
        let hostname: String
        let tags: [String]
        let parts: [PartRow]
        let bytes: Int64
        let metadata: [String: String]
    }

    struct PartRow: Encodable {
        let name: String
        let kind: String
        let files: Int
        let bytes: Int64
    }

    func run() async throws {
        try await runReportingErrors { pool in
            let repository = try await repo.openRepository(pool: pool)
            let all = try await repository.listSnapshots()
            if json {
                printOut(Format.json(all.map { id, s in
                    Row(id: id.hex, shortId: id.short, time: s.time, hostname: s.hostname, tags: s.tags,
                        parts: s.parts.map { PartRow(name: $0.name, kind: $0.kind.rawValue, files: $0.stats.files, bytes: $0.stats.bytes) },
                        bytes: s.totalBytes, metadata: s.metadata)
                }))
                return
            }
            let formatter = DateFormatter()
            formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
            printOut("ID        Time                 Host             Size        Parts")
            printOut(String(repeating: "-", count: 78))
            for (id, s) in all {
                let host = s.hostname.padding(toLength: 16, withPad: " ", startingAt: 0)
                let size = Format.bytes(s.totalBytes).padding(toLength: 11, withPad: " ", startingAt: 0)
                printOut("\(id.short)  \(formatter.string(from: s.time))  \(host) \(size) \(s.parts.map(\.name).joined(separator: ", "))")
            }
            printOut(String(repeating: "-", count: 78))
            printOut("\(all.count) snapshots")
        }
    }
}

struct RepoRestore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "restore", abstract: "Restore a snapshot.")
    @OptionGroup var repo: RepositoryOptionsGroup
    @Argument(help: "Snapshot id (any unique prefix) or \"latest\".") var snapshot: String
    @Option(help: "Directory to restore into: new or empty (or give --overwrite).") var target: String?
    @Flag(help: "Write a stream part to standard output.") var stdout = false
    @Option(help: "Restore only this part.") var part: String?
    @Flag(help: "Restore into a target directory that is not empty, replacing the files the snapshot holds.") var overwrite = false
    @Flag(help: "Remove files in the target that the snapshot does not hold.") var delete = false
    @Flag(help: "Also recompute every chunk's id from the restored bytes (as check --read-data does; one more SHA-256 pass).")
    var verifyIds = false

    func validate() throws {
        if (target == nil) == !stdout { throw ValidationError("give either --target DIR or --stdout") }
    }

    func run() async throws {
        try await runReportingErrors { pool in
            if let target { try Restorer.checkTarget(target, overwrite: overwrite) }
            try await repo.withLockedRepository(pool: pool, operation: "restore") { repository in
                let (id, snapshot) = try await repository.resolveSnapshot(self.snapshot)
                var parts = snapshot.parts
                if let part {
                    parts = parts.filter { $0.name == part }
                    guard !parts.isEmpty else {
                        throw CLIError("snapshot \(id.short) has no part \"\(part)\" (parts: \(snapshot.parts.map(\.name).joined(separator: ", ")))")
                    }
                }
                var options = RestoreOptions()
                options.connections = repo.connections ?? repository.storage.defaultConnections
                options.deleteExtraneous = delete
                options.verifyIDs = verifyIds
                let progress = ProgressCounters()
                let restorer = Restorer(repository: repository, options: options, progress: progress)
                if stdout {
                    guard parts.count == 1, let only = parts.first, only.kind == .stream else {
                        throw CLIError("--stdout needs exactly one stream part; use --part NAME")
                    }
                    _ = try await restorer.restoreStream(only.root, to: 1, name: "standard output")
                    return
                }
                let line = ProgressLine(progress, label: "restore", quiet: repo.quiet)
                defer { line.finish() }
                let started = Date()
                var bytes: Int64 = 0
                var files = 0
                for p in parts {
                    let into = parts.count == 1 ? target! : target! + "/" + safeName(p.name)
                    switch p.kind {
                    case .tree:
                        let stats = try await restorer.restoreTree(p, into: into)
                        bytes += stats.bytes
                        files += stats.files
                    case .stream:
                        try FileManager.default.createDirectory(atPath: target!, withIntermediateDirectories: true)
                        let path = target! + "/" + safeName(p.name)
                        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
                        guard fd >= 0 else { throw CLIError("cannot create \(path): \(String(cString: strerror(errno)))") }
                        defer { close(fd) }
                        bytes += try await restorer.restoreStream(p.root, to: fd, name: path)
                        files += 1
                    }
                }
                line.finish()
                let elapsed = Date().timeIntervalSince(started)
                printOut("restored snapshot \(id.short): \(files) files, \(Format.bytes(bytes)) in \(Format.duration(elapsed)) (\(Format.rate(bytes, elapsed)))")
            }
        }
    }

    func safeName(_ name: String) -> String {
        let trimmed = name.split(separator: "/").joined(separator: "_")
        return trimmed.isEmpty ? "root" : trimmed
    }
}

struct RepoCheck: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "check", abstract: "Verify the repository.")
    @OptionGroup var repo: RepositoryOptionsGroup
    @Flag(help: "Also download and verify every pack.") var readData = false
    @Flag(help: "Print JSON.") var json = false

    struct Summary: Encodable {
        let errors: [String]
        let warnings: [String]
        let snapshots: Int
        let packs: Int
        let blobs: Int
        let packsRead: Int
    }

    func run() async throws {
        try await runReportingErrors { pool in
            try await repo.withLockedRepository(pool: pool, operation: "check") { repository in
                let progress = ProgressCounters()
                let line = ProgressLine(progress, label: "check", quiet: repo.quiet || json)
                let report = try await Checker(repository: repository, progress: progress)
                    .check(readData: readData, connections: repo.connections ?? repository.storage.defaultConnections)
                line.finish()
                if json {
                    printOut(Format.json(Summary(errors: report.errors, warnings: report.warnings, snapshots: report.snapshots,
                                                 packs: report.packs, blobs: report.blobs, packsRead: report.packsRead)))
                } else {
                    for warning in report.warnings { printOut("warning: \(warning)") }
                    printOut("checked \(report.snapshots) snapshots, \(report.packs) packs, \(report.blobs) blobs" +
                             (readData ? ", read \(report.packsRead) packs" : ""))
                }
                if !report.errors.isEmpty {
                    for error in report.errors { FileHandle.standardError.write(Data("chebackup: error: \(error)\n".utf8)) }
                    throw CLIError("check found \(report.errors.count) errors")
                }
                if !json { printOut("no errors were found") }
            }
        }
    }
}

enum RepositoryURLPath {
    static func absolute(_ path: String) -> String {
        var p = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        return (p as NSString).standardizingPath
    }
}

struct RepoRepair: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "repair", abstract: "Rebuild damaged repository metadata.",
        discussion: "It holds an exclusive lock: nothing else may use the repository meanwhile.",
        subcommands: [RepoRepairIndex.self, RepoRepairSnapshots.self])
}

struct RepoRepairIndex: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "index", abstract: "Rebuild the index from the packs' headers, replacing every index file.")
    @OptionGroup var repo: RepositoryOptionsGroup

    func run() async throws {
        try await runReportingErrors { pool in
            try await repo.withLockedRepository(pool: pool, exclusive: true, operation: "repair index") { repository in
                let result = try await repository.repairIndex(connections: repo.connections ?? repository.storage.defaultConnections)
                for problem in result.unreadablePacks { printOut("warning: \(problem): its blobs are not indexed") }
                printOut("indexed \(result.blobs) blobs in \(result.packs) packs; replaced \(result.replacedIndexFiles) index files")
            }
        }
    }
}

struct RepoRepairSnapshots: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshots", abstract: "Remove snapshot files that cannot be read.")
    @OptionGroup var repo: RepositoryOptionsGroup

    func run() async throws {
        try await runReportingErrors { pool in
            try await repo.withLockedRepository(pool: pool, exclusive: true, operation: "repair snapshots") { repository in
                let removed = try await repository.repairSnapshots()
                for id in removed { printOut("removed damaged snapshot \(id.hex)") }
                printOut("\(removed.count) damaged snapshots removed")
            }
        }
    }
}

struct RepoUnlock: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unlock", abstract: "Remove stale locks (not refreshed for 30 minutes, or whose process is gone on this host).")
    @OptionGroup var repo: RepositoryOptionsGroup
    @Flag(help: "Remove every lock, also live ones: only when no other process uses the repository.") var removeAll = false

    func run() async throws {
        try await runReportingErrors { pool in
            let repository = try await repo.openRepository(pool: pool)
            let removed = try await repository.removeLocks(all: removeAll)
            printOut("removed \(removed) \(removeAll ? "" : "stale ")lock\(removed == 1 ? "" : "s")")
        }
    }
}
