import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import Synchronization

/// The mutating admission webhook over HTTPS: `POST /inject` (AdmissionReviews, bodies up to
/// `maxRequestSize`), `GET /healthz`. The certificate and key are read again whenever their
/// files change (a renewed Secret mounted into the pod), so renewal needs no restart.
public struct WebhookServer: Sendable {
    public var host: String
    public var port: Int
    public var certificateFile: String
    public var keyFile: String
    /// Kubernetes sends pods of up to ~1.5 MiB; more is refused with 413.
    public var maxRequestSize = 4 << 20
    let handler: AdmissionReviewHandler
    let logger: Logger

    public init(host: String, port: Int, certificateFile: String, keyFile: String, handler: AdmissionReviewHandler, logger: Logger) {
        self.host = host
        self.port = port
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.handler = handler
        self.logger = logger
    }

    public func run(onListening: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let router = Router()
        router.get("/healthz") { _, _ in "ok\n" }
        router.post("/inject") { [handler, maxRequestSize] request, _ -> Response in
            let body = try await request.body.collect(upTo: maxRequestSize)
            let answer = handler.answer(Data(body.readableBytesView))
            var headers = HTTPFields()
            headers[.contentType] = answer.status == 200 ? "application/json" : "text/plain; charset=utf-8"
            return Response(status: .init(code: answer.status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: answer.body)))
        }
        let certificates = CertificateFiles(certificate: certificateFile, key: keyFile, logger: logger)
        let initial = try certificates.current()
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: initial.chain, privateKey: initial.key)
        tls.minimumTLSVersion = .tlsv12
        tls.sslContextCallback = { _, promise in
            do {
                let loaded = try certificates.current()
                var override = NIOSSLContextConfigurationOverride()
                override.certificateChain = loaded.chain
                override.privateKey = loaded.key
                promise.succeed(override)
            } catch {
                promise.fail(error)
            }
        }
        let app = Application(router: router, server: try .tls(.http1(), tlsConfiguration: tls),
                              configuration: .init(address: .hostname(host, port: port), serverName: "chebackup-webhook"),
                              onServerRunning: { channel in await onListening(channel.localAddress?.port ?? 0) },
                              logger: logger)
        try await app.runService()
    }
}

/// The serving certificate and key, loaded from their files and loaded again when a file's
/// identity (inode, size, modification time) changes. A failed reload keeps the last good pair.
final class CertificateFiles: Sendable {
    struct Loaded: @unchecked Sendable {
        var chain: [NIOSSLCertificateSource]
        var key: NIOSSLPrivateKeySource
        var stamp: [Int64]
    }

    let certificate: String
    let key: String
    let logger: Logger
    private let state = Mutex<Loaded?>(nil)

    init(certificate: String, key: String, logger: Logger) {
        self.certificate = certificate
        self.key = key
        self.logger = logger
    }

    func current() throws -> Loaded {
        let stamp = Self.stamp(certificate) + Self.stamp(key)
        if let loaded = state.withLock({ $0 }), loaded.stamp == stamp { return loaded }
        do {
            let chain = try NIOSSLCertificate.fromPEMFile(certificate).map { NIOSSLCertificateSource.certificate($0) }
            guard !chain.isEmpty else { throw InjectionError("\(certificate) holds no certificate") }
            let privateKey = try NIOSSLPrivateKey(file: key, format: .pem)
            let loaded = Loaded(chain: chain, key: .privateKey(privateKey), stamp: stamp)
            let previous = state.withLock { value -> Loaded? in
                defer { value = loaded }
                return value
            }
            if previous != nil { logger.notice("serving certificate reloaded from \(certificate)") }
            return loaded
        } catch {
            if let last = state.withLock({ $0 }) {
                logger.warning("serving certificate \(certificate) could not be reloaded (\(error)); still serving the previous one")
                return last
            }
            throw InjectionError("the serving certificate \(certificate) or key \(key) cannot be read: \(error)")
        }
    }

    static func stamp(_ path: String) -> [Int64] {
        var st = stat()
        guard stat(path, &st) == 0 else { return [-1] }
        return [Int64(st.st_ino), Int64(st.st_size), Int64(st.st_mtim.tv_sec), Int64(st.st_mtim.tv_nsec)]
    }
}
