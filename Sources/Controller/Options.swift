import ArgumentParser
import Foundation
import Logging
import Repository
import Storage
import AgentClient
import LineProtocol
import ControllerCore

/// Flags every repository command shares.
struct RepositoryOptionsGroup: ParsableArguments {
    @Option(name: [.customShort("r"), .customLong("repository-url")],
            help: "Repository: local:/path or a path. Default: $BACKUP_REPOSITORY_URL.")
    var repositoryURL: String?

    @Option(name: [.customShort("p"), .customLong("repository-password")],
            help: ArgumentHelp("Repository password. Prefer $BACKUP_REPOSITORY_PASSWORD or --password-file: a flag shows in process listings.",
                               valueName: "password"))
    var repositoryPassword: String?

    @Option(name: .customLong("password-file"), help: "Read the repository password from this file.")
    var passwordFile: String?

    @Option(help: "Transfers at once (default: the backend's).")
    var connections: Int?

    @Option(help: "When the repository is locked by another process, keep trying this long (90s, 10m) instead of failing.")
    var retryLock: String?

    @Flag(name: .shortAndLong, help: "Print no progress.")
    var quiet = false

    @Flag(name: .shortAndLong, help: "Log more (info level).")
    var verbose = false

    func validate() throws {
        if repositoryPassword != nil && passwordFile != nil {
            throw ValidationError("give the password with only one of --repository-password and --password-file")
        }
        if let connections, connections < 1 || connections > 64 {
            throw ValidationError("--connections must be between 1 and 64")
        }
    }

    func url() throws -> RepositoryURL {
        guard let text = repositoryURL ?? ProcessInfo.processInfo.environment["BACKUP_REPOSITORY_URL"] else {
            throw CLIError("no repository given: use -r/--repository-url or BACKUP_REPOSITORY_URL")
        }
        do { return try RepositoryURL.parse(text) } catch let error as RepositoryURL.ParseError {
            throw CLIError("invalid repository URL: \(error.description)")
        }
    }

    func password() throws -> String {
        if let repositoryPassword { return repositoryPassword }
        if let passwordFile {
            guard let text = try? String(contentsOfFile: passwordFile, encoding: .utf8) else {
                throw CLIError("cannot read the password file \(passwordFile)")
            }
            return text.trimmingCharacters(in: .newlines)
        }
        if let env = ProcessInfo.processInfo.environment["BACKUP_REPOSITORY_PASSWORD"] { return env }
        throw CLIError("no repository password: use BACKUP_REPOSITORY_PASSWORD, --password-file or -p")
    }

    var logger: Logger { makeLogger(verbose ? .info : .warning) }

    func storage(pool: BlockingPool) throws -> any Storage {
        try StorageStack.open(try url(), connections: connections, pool: pool, logger: logger)
    }

    func openRepository(pool: BlockingPool) async throws -> Repository {
        try await Repository.open(storage: try storage(pool: pool), password: try password(), logger: logger)
    }

    /// Opens the repository and runs `body` holding a lock (shared for backup, restore and
    /// check; exclusive for what deletes), removed afterwards, also on SIGINT and SIGTERM.
    func withLockedRepository<T: Sendable>(pool: BlockingPool, exclusive: Bool = false, operation: String,
                                           _ body: (Repository) async throws -> T) async throws -> T {
        let repository = try await openRepository(pool: pool)
        let retry = try retryLock.map { try parseDuration($0, option: "--retry-lock") } ?? .zero
        return try await repository.withLock(exclusive: exclusive, operation: operation, retry: retry) { _ in try await body(repository) }
    }
}

/// A user-facing error: its text is printed as is.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ text: String) { description = text }
}

/// Runs a command body, turning every failure into one line on stderr and exit status 1.
func runReportingErrors(_ body: (BlockingPool) async throws -> Void) async throws {
    // Buffers of a chunk or a pack are large and short-lived: have malloc map and unmap them
    // rather than keep them in its heaps, so resident memory follows what is in flight.
    tuneAllocator()
    RepositoryLock.releaseOnTermination()
    let pool = BlockingPool(threads: 8)
    defer { pool.shutdown() }
    do {
        try await body(pool)
    } catch let error as ExitCode {
        throw error
    } catch {
        FileHandle.standardError.write(Data("chebackup: error: \(describe(error))\n".utf8))
        throw ExitCode.failure
    }
}


/// The one logger factory of the command line: to stderr, at `level`.
func makeLogger(_ level: Logger.Level, label: String = "chebackup") -> Logger {
    var logger = Logger(label: label) { StreamLogHandler.standardError(label: $0) }
    logger.logLevel = level
    return logger
}
