import Foundation
import Logging

/// Retries transient failures with exponential backoff and full jitter. Permanent failures
/// (not found, access denied, invalid range, …) are returned at once.
public struct RetryingStorage: Storage {
    public let base: any Storage
    public let attempts: Int
    public let initialDelay: Duration
    public let maxDelay: Duration
    let logger: Logger

    public init(_ base: any Storage, attempts: Int = 6, initialDelay: Duration = .milliseconds(200),
                maxDelay: Duration = .seconds(5), logger: Logger) {
        self.base = base
        self.attempts = max(1, attempts)
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
        self.logger = logger
    }

    public var location: String { base.location }
    public var defaultConnections: Int { base.defaultConnections }

    /// `progress`, read after each failure: how far the work has got (a stream's bytes
    /// delivered); when it moved since the last failure, the count and the delay start over.
    func retry<T>(_ what: @autoclosure () -> String, progress: () -> Int64 = { 0 },
                  _ body: () async throws -> T) async throws -> T {
        var delay = initialDelay
        var attempt = 1
        var reached = progress()
        while true {
            do {
                return try await body()
            } catch let error as StorageError where error.isTransient {
                if progress() > reached {
                    reached = progress()
                    attempt = 1
                    delay = initialDelay
                }
                guard attempt < attempts else {
                    throw StorageError(.transient, "\(what()) failed after \(attempts) attempts: \(error.message)")
                }
                let jittered = Duration.nanoseconds(Int64.random(in: 0...max(1, delay.nanoseconds)))
                logger.info("\(what()) failed (attempt \(attempt) of \(attempts)), retrying: \(error.message)")
                try await Task.sleep(for: jittered)
                delay = min(delay * 2, maxDelay)
                attempt += 1
            }
        }
    }

    public func create() async throws { try await retry("create \(location)") { try await base.create() } }
    public func save(_ handle: Handle, data: Data) async throws {
        try await retry("save \(handle)") { try await base.save(handle, data: data) }
    }
    /// A retry after an attempt that did store the file finds its own bytes: success.
    public func saveNew(_ handle: Handle, data: Data) async throws {
        try await retry("create \(handle)") { try await base.saveNew(handle, data: data) }
    }
    public func makeStagingFile(for type: FileType) throws -> StagedFile { try base.makeStagingFile(for: type) }
    public func save(_ handle: Handle, staged: StagedFile) async throws {
        try await retry("save \(handle)") { try await base.save(handle, staged: staged) }
    }
    public func load(_ handle: Handle, range: Range<Int64>?) async throws -> Data {
        try await retry("load \(handle)") { try await base.load(handle, range: range) }
    }
    /// A stream that breaks off after some bytes resumes where it stopped: `consume` sees every
    /// byte once, in order. Each attempt that delivers bytes earns a fresh count of attempts. An
    /// error from `consume` itself is never retried, even when it is a transient `StorageError`.
    public func stream(_ handle: Handle, range: Range<Int64>, to consume: @escaping ByteConsumer) async throws {
        let delivered = Locked<Int64>(0)
        do {
            try await retry("load \(handle)", progress: { delivered.value }) {
                let rest = (range.lowerBound + delivered.value)..<range.upperBound
                if rest.isEmpty && !range.isEmpty { return }
                try await base.stream(handle, range: rest) { bytes in
                    do { try consume(bytes) } catch { throw ConsumerFailure(error: error) }
                    delivered.withLock { $0 += Int64(bytes.count) }
                }
            }
        } catch let failure as ConsumerFailure {
            throw failure.error
        }
    }
    public func stat(_ handle: Handle) async throws -> FileInfo {
        try await retry("stat \(handle)") { try await base.stat(handle) }
    }
    public func list(_ type: FileType) async throws -> [FileInfo] {
        try await retry("list \(type.rawValue)") { try await base.list(type) }
    }
    public func remove(_ handle: Handle) async throws {
        try await retry("remove \(handle)") { try await base.remove(handle) }
    }
}

/// Carries an error thrown by a stream's consumer through the retry loop untouched.
private struct ConsumerFailure: Error {
    let error: any Error
}

extension Duration {
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

/// Runs at most `connections` operations at once against the wrapped backend.
public struct LimitedStorage: Storage {
    public let base: any Storage
    public let connections: Int
    private let semaphore: AsyncSemaphore

    public init(_ base: any Storage, connections: Int) {
        self.base = base
        self.connections = max(1, connections)
        semaphore = AsyncSemaphore(permits: self.connections)
    }

    public var location: String { base.location }
    public var defaultConnections: Int { connections }

    public func create() async throws { try await semaphore.withPermit { try await base.create() } }
    public func save(_ handle: Handle, data: Data) async throws {
        try await semaphore.withPermit { try await base.save(handle, data: data) }
    }
    public func saveNew(_ handle: Handle, data: Data) async throws {
        try await semaphore.withPermit { try await base.saveNew(handle, data: data) }
    }
    public func makeStagingFile(for type: FileType) throws -> StagedFile { try base.makeStagingFile(for: type) }
    public func save(_ handle: Handle, staged: StagedFile) async throws {
        try await semaphore.withPermit { try await base.save(handle, staged: staged) }
    }
    public func load(_ handle: Handle, range: Range<Int64>?) async throws -> Data {
        try await semaphore.withPermit { try await base.load(handle, range: range) }
    }
    public func stream(_ handle: Handle, range: Range<Int64>, to consume: @escaping ByteConsumer) async throws {
        try await semaphore.withPermit { try await base.stream(handle, range: range, to: consume) }
    }
    public func stat(_ handle: Handle) async throws -> FileInfo {
        try await semaphore.withPermit { try await base.stat(handle) }
    }
    public func list(_ type: FileType) async throws -> [FileInfo] {
        try await semaphore.withPermit { try await base.list(type) }
    }
    public func remove(_ handle: Handle) async throws {
        try await semaphore.withPermit { try await base.remove(handle) }
    }
}

/// The one place where backends get their wrappers: the connection limit innermost (each retry
/// waits for a connection again), the retries outside it.
public enum StorageStack {
    public static func compose(_ backend: any Storage, connections: Int? = nil, retries: Int = 6,
                               initialDelay: Duration = .milliseconds(200), logger: Logger) -> any Storage {
        let limited = LimitedStorage(backend, connections: connections ?? backend.defaultConnections)
        return RetryingStorage(limited, attempts: retries, initialDelay: initialDelay, logger: logger)
    }

    /// Opens the backend a repository URL names, wrapped by `compose`.
    public static func open(_ url: RepositoryURL, credentials: BackendCredentials = .fromEnvironment(),
                            connections: Int? = nil, retries: Int = 6, pool: BlockingPool, logger: Logger) throws -> any Storage {
        let backend: any Storage
        switch url {
        case .local(let path):
            backend = LocalStorage(path: path, pool: pool)
        case .rest(var location):
            if location.username == nil { location.username = credentials.restUsername }
            if location.password == nil { location.password = credentials.restPassword }
            var settings = CurlSettings()
            settings.caFile = credentials.caFile
            backend = RESTStorage(location, transport: CurlTransport(pool: pool, settings: settings, redactedLocation: url.description))
        case .s3(let location):
            guard let id = credentials.awsAccessKeyID, let secret = credentials.awsSecretAccessKey else {
                throw StorageError(.accessDenied, "S3 needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
            }
            var settings = CurlSettings()
            settings.caFile = credentials.caFile
            backend = S3Storage(location, credentials: S3Credentials(accessKeyID: id, secretAccessKey: secret, region: credentials.awsRegion),
                                transport: CurlTransport(pool: pool, settings: settings, redactedLocation: url.description))
        case .sftp(let location):
            var settings = CurlSettings()
            var keyFile: TemporaryKeyFile?
            if let key = credentials.sshKey {
                keyFile = try TemporaryKeyFile(contents: key)
                settings.sshPrivateKeyFile = keyFile?.path
            } else if let file = credentials.sshKeyFile {
                settings.sshPrivateKeyFile = file
            } else {
                let home = ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()
                settings.sshPrivateKeyFile = ["id_ed25519", "id_ecdsa", "id_rsa"].map { home + "/.ssh/" + $0 }
                    .first { FileManager.default.fileExists(atPath: $0) }
            }
            guard settings.sshPrivateKeyFile != nil else {
                throw StorageError(.accessDenied, "SFTP needs a private key: set SSH_KEY_FILE or SSH_KEY")
            }
            if let fingerprint = credentials.sshHostFingerprint {
                settings.sshHostKeySHA256 = fingerprint.hasPrefix("SHA256:") ? String(fingerprint.dropFirst(7)) : fingerprint
            } else {
                let known = credentials.sshKnownHosts
                    ?? (ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()) + "/.ssh/known_hosts"
                guard FileManager.default.fileExists(atPath: known) else {
                    throw StorageError(.accessDenied, "cannot verify the SFTP server's host key: no known_hosts file at \(known); set SSH_KNOWN_HOSTS or SSH_HOST_FINGERPRINT")
                }
                settings.sshKnownHosts = known
            }
            backend = SFTPStorage(location, transport: CurlTransport(pool: pool, settings: settings, redactedLocation: url.description,
                                                                      keepAlive: keyFile))
        }
        return compose(backend, connections: connections, retries: retries, logger: logger)
    }
}
