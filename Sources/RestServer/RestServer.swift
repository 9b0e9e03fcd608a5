/// RestServer: the internal backup server. It serves restic's REST backend protocol (v1 and v2)
/// from a directory, so both che-backup and the unmodified restic client can use it.
///
/// Terms: a *repository* is a directory under the served path (the path itself, or a sub-path
/// such as `/che/`), holding `config` and the typed directories `keys/ locks/ snapshots/ index/
/// data/XX/`. Requests: `POST /repo/?create=true`, `HEAD|GET|POST /repo/config`,
/// `GET /repo/{type}/`, `HEAD|GET|POST|DELETE /repo/{type}/{name}`.
///
/// Files are reached only through `RootDirectory`, one component at a time without following
/// symbolic links; an upload is written to a temporary `.upload-<pid>-<UUID>` (`Uploads`, which
/// also sweeps those of dropped uploads) and placed by rename, or in append-only mode by link(2)
/// so that an existing file is never replaced; passwords are checked on a `BcryptPool`.
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL

public struct RestServerConfiguration: Sendable {
    public var path: String
    public var host = "127.0.0.1"
    public var port = 8000
    public var htpasswdFile: String?
    public var appendOnly = false
    public var privateRepos = false
    public var tlsCertificate: String?
    public var tlsKey: String?
    /// Largest request body accepted (restic packs are far smaller).
    public var maxRequestSize: Int64 = 256 << 20
    /// bcrypt verifications run on this many dedicated threads; at most `bcryptQueueLimit` more
    /// wait, and further ones are answered 503 at once.
    var bcryptThreads = 2
    var bcryptQueueLimit = 8
    /// After a failed password from a client, its next check waits this long (doubling with each
    /// further failure, up to 32 times this); beyond `authFailureWaiters` waiting requests of
    /// that client, further ones are answered 429.
    var authFailureDelay: Duration = .milliseconds(250)
    var authFailureWaiters = 4
    /// How often temporary files of dropped uploads are swept (also once at start).
    var staleUploadSweepInterval: Duration = .seconds(3600)
    var hooks = RestServerHooks()

    public init(path: String) { self.path = path }
}

/// Seams for tests, called at fixed points of request handling.
struct RestServerHooks: Sendable {
    /// After an upload was written and synced, before it is placed under its final name.
    var beforePlacement: (@Sendable (String) async -> Void)?
    /// On the thread that is about to run a bcrypt verification.
    var beforeBcrypt: (@Sendable () -> Void)?
}

/// Runs the server until the task is cancelled.
public struct RestServer: Sendable {
    public let configuration: RestServerConfiguration
    let logger: Logger

    public init(configuration: RestServerConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// HTTP/1.1 whose connections read up to 1 MiB per socket read (NIO's default stops at
    /// 64 KiB): a 16 MiB pack upload then takes 16 times fewer reads, hand-offs and writes.
    static let http1 = HTTPServerBuilder { responder in LargeReads(base: HTTP1Channel(responder: responder)) }

    /// Serves until cancelled; `onListening` gets the bound port (useful with port 0). Before it
    /// listens, and then every `staleUploadSweepInterval`, temporary files of dropped uploads go.
    public func run(onListening: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let responder = try RestResponder(configuration: configuration, logger: logger)
        defer { responder.bcrypt?.shutdown() }
        responder.uploads.sweep(responder.rootDirectory, logger: logger)
        let server: HTTPServerBuilder
        if let cert = configuration.tlsCertificate, let key = configuration.tlsKey {
            let chain = try NIOSSLCertificate.fromPEMFile(cert).map { NIOSSLCertificateSource.certificate($0) }
            let tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
            server = try .tls(Self.http1, tlsConfiguration: tls)
        } else {
            server = Self.http1
        }
        let app = Application(responder: responder, server: server,
                              configuration: .init(address: .hostname(configuration.host, port: configuration.port),
                                                   serverName: "chebackup-rest-server"),
                              onServerRunning: { channel in await onListening(channel.localAddress?.port ?? 0) },
                              logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.runService() }
            group.addTask { [configuration, logger] in
                while true {
                    try await Task.sleep(for: configuration.staleUploadSweepInterval)
                    await offThread { responder.uploads.sweep(responder.rootDirectory, logger: logger) }
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// Runs blocking file work on a thread of its own, not on the threads that serve requests.
    private func offThread(_ work: @escaping @Sendable () -> Void) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread {
                work()
                continuation.resume()
            }.start()
        }
    }
}

/// Sets a larger receive buffer on each connection, then sets it up as `base` does.
struct LargeReads<Base: ServerChildChannel>: ServerChildChannel {
    let base: Base

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Base.Value> {
        channel.setOption(ChannelOptions.recvAllocator,
                          value: AdaptiveRecvByteBufferAllocator(minimum: 64 << 10, initial: 256 << 10, maximum: 1 << 20))
            .flatMap { base.setup(channel: channel, logger: logger) }
    }

    func handle(value: Base.Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}
