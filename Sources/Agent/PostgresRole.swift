import Foundation
import LineProtocol
import Repository
import Subprocess

/// Dumps roles and globals (`pg_dumpall --globals-only`) and each database (`pg_dump -Fc -Z0`,
/// uncompressed so dedup and LZ4 work), streamed into the pipeline without temporary files.
/// Restore puts the globals back first, then drops, recreates and restores each database from
/// its stream with `pg_restore --create`, two at a time.
struct PostgresRole: Role {
    let name = "postgres"
    /// Databases to dump; empty: every database that accepts connections except templates and "postgres".
    let databases: [String]
    /// Directory of pg_dump, pg_dumpall, pg_restore and psql.
    let binDirectory: String
    let parallel = 2

    func tool(_ name: String) -> String {
        let path = binDirectory + "/" + name
        return FileManager.default.isExecutableFile(atPath: path) ? path : "/usr/bin/" + name
    }

    func listDatabases() async throws -> [String] {
        if !databases.isEmpty { return databases }
        let out = try await Subprocess.output(tool("psql"), ["-X", "-A", "-t", "-d", "postgres", "-c",
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate AND datname <> 'postgres' ORDER BY 1"])
        return out.split(separator: "\n").map { String($0).trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    func backup(_ repo: Repository, parts: [String]?, installation: String?, progress: ProgressCounters, stage: @escaping @Sendable (String) -> Void)
        async throws -> [Part] {
        stage("listing databases")
        var names = ["globals"] + (try await listDatabases())
        if let parts {
            let wanted = parts.map { $0.hasPrefix("postgres/") ? String($0.dropFirst(9)) : $0 }
            names = names.filter { wanted.contains($0) }
        }
        let sources: [BackupSource] = names.map { db in
            .producer(name: "postgres/" + db) { [self] in
                stage(db == "globals" ? "dumping roles and globals" : "dumping database \(db)")
                if db == "globals" { return try Subprocess(tool("pg_dumpall"), ["--globals-only", "--no-password"]) }
                return try Subprocess(tool("pg_dump"), ["-Fc", "-Z0", "--no-password", "-d", db])
            }
        }
        var options = BackupOptions()
        options.partConcurrency = parallel
        options.installation = installation
        options.connections = repo.storage.defaultConnections
        return try await repo.storeParts(sources, options: options, progress: progress).parts
    }

    func restore(_ repo: Repository, snapshot: Snapshot, parts: [String]?, keepExtraneous: Bool, rewrite: [Rewrite],
                 progress: ProgressCounters, stage: @escaping @Sendable (String) -> Void) async throws -> [String] {
        let own = try ownParts(of: snapshot, wanted: parts)
        var options = RestoreOptions()
        options.connections = repo.storage.defaultConnections
        let restorer = Restorer(repository: repo, options: options, progress: progress)
        if let globals = own.first(where: { $0.name == "postgres/globals" }) {
            stage("restoring roles and globals")
            // Roles that exist already make psql complain; that is expected and not an error.
            let psql = try Subprocess(tool("psql"), ["-X", "-q", "-v", "ON_ERROR_STOP=0", "-d", "postgres", "-f", "-"], stdin: true)
            try await feed(globals, to: psql, restorer: restorer)
        }
        let dbs = own.filter { $0.name != "postgres/globals" }
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = 0
            func launch() {
                guard next < dbs.count else { return }
                let part = dbs[next]
                next += 1
                group.addTask {
                    try await restoreDatabase(part, restorer: restorer, stage: stage)
                    if !rewrite.isEmpty { try await rewriteRows(in: String(part.name.dropFirst(9)), rewrite, stage: stage) }
                }
            }
            for _ in 0..<parallel { launch() }
            while try await group.next() != nil { launch() }
        }
        return own.map(\.name)
    }

    func restoreDatabase(_ part: Part, restorer: Restorer, stage: @escaping @Sendable (String) -> Void) async throws {
        let db = String(part.name.dropFirst(9))
        stage("recreating database \(db)")
        let quoted = "\"" + db.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        _ = try await Subprocess.output(tool("psql"), ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres",
                                                       "-c", "DROP DATABASE IF EXISTS \(quoted) WITH (FORCE)"])
        stage("restoring database \(db)")
        let restore = try Subprocess(tool("pg_restore"), ["--create", "--exit-on-error", "--no-password", "-d", "postgres"], stdin: true)
        try await feed(part, to: restore, restorer: restorer)
    }

    /// Replaces text in every text, varchar and json(b) column of every user table: the rows
    /// that carry the old namespace or domain, when restoring into another installation.
    ///
    /// No value is ever spliced into SQL text: `from` and `to` reach psql as variables (`-v`), which
    /// it quotes as literals itself (`:'from'`, PQescapeLiteral); the UPDATE statements are built by
    /// the server with `format(%I, %L)` and run by `\gexec`. The values were also checked to be DNS
    /// names before the request was accepted (`Rewrite.problem`).
    func rewriteRows(in db: String, _ rewrite: [Rewrite], stage: @escaping @Sendable (String) -> Void) async throws {
        stage("rewriting \(rewrite.map { "\($0.from) → \($0.to)" }.joined(separator: ", ")) in \(db)")
        for r in rewrite where !r.from.isEmpty {
            if let problem = r.problem { throw RepositoryError(.invalidArgument, problem) }
            let script = """
                SELECT format('UPDATE %I.%I SET %I = replace(%I::text, %L, %L)::%s WHERE strpos(%I::text, %L) > 0',
                    c.table_schema, c.table_name, c.column_name, c.column_name, :'from', :'to',
                    CASE c.data_type WHEN 'character varying' THEN 'varchar' ELSE c.data_type END, c.column_name, :'from')
                FROM information_schema.columns c
                JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
                WHERE c.table_schema NOT IN ('pg_catalog', 'information_schema')
                  AND c.data_type IN ('text', 'character varying', 'json', 'jsonb')
                  AND t.table_type = 'BASE TABLE'
                \\gexec

                """
            let psql = try Subprocess(tool("psql"), ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", "from=\(r.from)", "-v", "to=\(r.to)",
                                                     "-1", "-d", db, "-f", "-"], stdin: true)
            try await drive(psql, doing: "rewriting \(db)") { try $0.writeAll(Data(script.utf8)) }
        }
    }

    /// Streams a part into a program's standard input, then checks how the program ended.
    func feed(_ part: Part, to process: Subprocess, restorer: Restorer) async throws {
        try await drive(process, doing: "restoring \(part.name)") {
            _ = try await restorer.restoreStream(part.root, to: $0.stdinFD, name: "\($0.name) input")
        }
    }

    /// Writes a program's standard input with `write`, closes it, and checks how the program
    /// ended. A tool that died makes our writes fail: its own message (the tail of its standard
    /// error) says why, so that is what the error carries.
    func drive(_ process: Subprocess, doing what: String, _ write: (Subprocess) async throws -> Void) async throws {
        do {
            try await write(process)
            process.closeStdin()
            try await process.finish()
        } catch {
            if process.isRunning { process.abort() }
            _ = await process.wait()
            let detail = process.stderrSummary
            throw RepositoryError(.io, "\(process.name) failed \(what)\(detail.isEmpty ? ": \(error)" : ": " + detail)")
        }
    }
}
