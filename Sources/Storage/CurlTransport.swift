import CCurl
import Foundation

/// One transfer for libcurl: HTTP(S) or SFTP.
public struct CurlRequest: Sendable {
    public var method = "GET"
    public var url: String
    public var headers: [(String, String)] = []
    public var body: Data?
    /// A staged file to send as the body instead of `body` (read from its descriptor as sent).
    public var bodyFile: StagedFile?
    /// Hands a successful response's body to this, piece by piece, instead of collecting it
    /// (the response's `body` is then empty; `streamed` counts the bytes handed over).
    public var consume: ByteConsumer?
    /// Send `body` as an upload (PUT over HTTP, file write over SFTP) instead of a request body.
    public var upload = false
    public var range: Range<Int64>?
    public var username: String?
    public var password: String?
    /// SFTP/HTTP commands run before and after the transfer (SFTP: "rename a b", "rm a", "mkdir a").
    public var quote: [String] = []
    public var postQuote: [String] = []
    public var noBody = false
    public var createMissingDirs = false
    /// Send the path exactly as given ("/a/../b" not squashed): for tests of servers.
    public var pathAsIs = false
    /// Overrides the settings' low-speed abort for this transfer (seconds below 1 KiB/s); 0 never
    /// aborts a slow transfer: for long-lived streams that are quiet for minutes (watches).
    public var lowSpeedSeconds: Int?
    /// Aborts the whole transfer after this many seconds; nil: no limit.
    public var timeoutSeconds: Int?
    /// Polled while the transfer runs (about once a second even when nothing arrives, and on each
    /// piece of data): true aborts it, and `perform` throws `CancellationError`.
    public var isCancelled: (@Sendable () -> Bool)?
    /// Throw `CurlFailure` (which says what kind of failure it was) instead of a `StorageError`
    /// when libcurl itself fails (no connection, TLS, timeout).
    public var typedFailures = false

    public init(method: String = "GET", url: String) {
        self.method = method
        self.url = url
    }
}

public struct CurlResponse: Sendable {
    public let status: Int
    /// Header names lowercased.
    public let headers: [String: String]
    public let body: Data
    /// The size libcurl learned (Content-Length, or an SFTP file's size); nil when unknown.
    public let contentLength: Int64?
    /// Bytes handed to the request's `consume`.
    public var streamed: Int64 = 0
    /// Body bytes that arrived over the connection (more than `streamed` when a server answered
    /// a range request with the whole file).
    public var downloaded: Int64 = 0
}

/// Settings fixed per backend: timeouts, TLS, SSH keys and host verification.
public struct CurlSettings: Sendable {
    public var connectTimeout = 10
    /// Abort a transfer slower than 1 KiB/s for this many seconds.
    public var lowSpeedSeconds = 60
    public var caFile: String?
    public var sshPrivateKeyFile: String?
    public var sshPublicKeyFile: String?
    public var sshKnownHosts: String?
    public var sshHostKeySHA256: String?
    /// Trusted CA certificates (PEM) from memory, instead of the system's (`caFile` is ignored then).
    public var caPEM: Data?
    /// A TLS client certificate and its key (PEM) from memory.
    public var clientCertPEM: Data?
    public var clientKeyPEM: Data?
    /// Skip verifying the server's certificate and name. Only when a configuration says so
    /// explicitly (a kubeconfig's insecure-skip-tls-verify).
    public var insecureSkipVerify = false
    /// Send TCP keepalive probes after this many idle seconds (notices a dead peer on quiet streams).
    public var tcpKeepAliveSeconds: Int?
    public init() {}
}

/// A libcurl failure, as thrown for requests with `typedFailures`: what kind it was, libcurl's text.
public struct CurlFailure: Error, Sendable, CustomStringConvertible {
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        private let raw: String
        private init(_ raw: String) { self.raw = raw }
        public var description: String { raw }

        /// The host name did not resolve.
        public static let resolve = Kind("resolve")
        /// Nothing accepted the connection (refused, unreachable, connect timeout).
        public static let connect = Kind("connect")
        /// The connection broke or the transfer took too long.
        public static let network = Kind("network")
        /// The TLS handshake failed: the server's certificate was not trusted, or our certificate was refused.
        public static let tls = Kind("tls")
        /// Anything else.
        public static let other = Kind("other")
    }

    public let kind: Kind
    /// libcurl's own description of the failure.
    public let detail: String
    public let curlCode: Int

    public var description: String { "\(detail) (curl error \(curlCode))" }

    static func kind(of code: CURLcode) -> Kind {
        switch code {
        case CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY: return .resolve
        case CURLE_COULDNT_CONNECT: return .connect
        case CURLE_OPERATION_TIMEDOUT, CURLE_SEND_ERROR, CURLE_RECV_ERROR, CURLE_GOT_NOTHING, CURLE_PARTIAL_FILE,
             CURLE_SEND_FAIL_REWIND, CURLE_HTTP2, CURLE_HTTP2_STREAM:
            return .network
        case CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM, CURLE_SSL_CIPHER,
             CURLE_SSL_CACERT_BADFILE, CURLE_SSL_ISSUER_ERROR, CURLE_SSL_PINNEDPUBKEYNOTMATCH, CURLE_SSL_INVALIDCERTSTATUS,
             CURLE_SSL_CRL_BADFILE, CURLE_SSL_SHUTDOWN_FAILED, CURLE_SSL_ENGINE_NOTFOUND, CURLE_SSL_ENGINE_SETFAILED,
             CURLE_SSL_ENGINE_INITFAILED, CURLE_USE_SSL_FAILED:
            return .tls
        default: return .other
        }
    }
}

private let curlGlobalInit: Void = { curl_global_init(Int(CURL_GLOBAL_DEFAULT)) }()

/// Runs libcurl transfers on dedicated threads (never Swift's cooperative pool), reusing easy
/// handles so connections and SSH sessions survive between transfers.
public final class CurlTransport: Sendable {
    let pool: BlockingPool
    let settings: CurlSettings
    private let idle = Locked<[HandleBox]>([])
    /// What the location is called in errors (never with a password).
    let redactedLocation: String

    /// Something that must live as long as the transport (a temporary key file).
    let keepAlive: (any Sendable)?

    public init(pool: BlockingPool, settings: CurlSettings = .init(), redactedLocation: String, keepAlive: (any Sendable)? = nil) {
        _ = curlGlobalInit
        self.keepAlive = keepAlive
        self.pool = pool
        self.settings = settings
        self.redactedLocation = redactedLocation
    }

    deinit {
        for box in idle.value { curl_easy_cleanup(box.handle) }
    }

    public func perform(_ request: CurlRequest) async throws -> CurlResponse {
        try await pool.run { [self] in try performBlocking(request) }
    }

    func performBlocking(_ request: CurlRequest) throws -> CurlResponse {
        let box = idle.withLock { $0.popLast() } ?? HandleBox(curl_easy_init())
        guard let handle = box.handle else { throw StorageError(.permanent, "libcurl could not create a handle") }
        var keep = true
        defer {
            if keep { idle.withLock { $0.append(box) } } else { curl_easy_cleanup(handle) }
        }
        curl_easy_reset(handle)
        let transfer = Transfer(upload: request.body ?? Data(), file: request.bodyFile)
        if let consume = request.consume {
            transfer.stream(to: consume, handle: handle, range: request.range, http: !request.url.hasPrefix("sftp:"))
        } else if let range = request.range, range.count >= 1 << 20, range.count <= BufferPool.objects.capacity {
            transfer.receiveInto(BufferPool.objects)
        }
        var lists: [UnsafeMutablePointer<curl_slist>?] = []
        defer { for l in lists { curl_slist_free_all(l) } }
        func slist(_ items: [String]) -> UnsafeMutablePointer<curl_slist>? {
            var list: UnsafeMutablePointer<curl_slist>?
            for item in items { list = curl_slist_append(list, item) }
            lists.append(list)
            return list
        }
        var errorBuffer = [CChar](repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        let unmanaged = Unmanaged.passRetained(transfer)
        defer { unmanaged.release() }
        let opaque = unmanaged.toOpaque()

        let code: CURLcode = errorBuffer.withUnsafeMutableBufferPointer { errbuf in
            chb_curl_setopt_string(handle, CURLOPT_URL, request.url)
            chb_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1)
            chb_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT, settings.connectTimeout)
            chb_curl_setopt_long(handle, CURLOPT_LOW_SPEED_LIMIT, 1024)
            chb_curl_setopt_long(handle, CURLOPT_LOW_SPEED_TIME, request.lowSpeedSeconds ?? settings.lowSpeedSeconds)
            if let seconds = request.timeoutSeconds { chb_curl_setopt_long(handle, CURLOPT_TIMEOUT, seconds) }
            if let idle = settings.tcpKeepAliveSeconds {
                chb_curl_setopt_long(handle, CURLOPT_TCP_KEEPALIVE, 1)
                chb_curl_setopt_long(handle, CURLOPT_TCP_KEEPIDLE, idle)
                chb_curl_setopt_long(handle, CURLOPT_TCP_KEEPINTVL, idle)
            }
            if let isCancelled = request.isCancelled {
                transfer.isCancelled = isCancelled
                chb_curl_setopt_long(handle, CURLOPT_NOPROGRESS, 0)
                chb_curl_setopt_xferinfocb(handle, CURLOPT_XFERINFOFUNCTION) { user, _, _, _, _ in
                    Unmanaged<Transfer>.fromOpaque(user!).takeUnretainedValue().cancelled ? 1 : 0
                }
                chb_curl_setopt_pointer(handle, CURLOPT_XFERINFODATA, opaque)
            }
            // Packs are megabytes: move them in 1 MiB pieces, not libcurl's default 16/64 KiB
            // (16 times fewer callbacks, reads and socket calls).
            chb_curl_setopt_long(handle, CURLOPT_BUFFERSIZE, 1 << 20)
            chb_curl_setopt_long(handle, CURLOPT_UPLOAD_BUFFERSIZE, 1 << 20)
            chb_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, errbuf.baseAddress)
            chb_curl_setopt_datacb(handle, CURLOPT_WRITEFUNCTION) { data, size, count, user in
                let t = Unmanaged<Transfer>.fromOpaque(user!).takeUnretainedValue()
                if let data, !t.received(UnsafeRawBufferPointer(start: data, count: size * count)) { return 0 }  // aborts
                return size * count
            }
            chb_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, opaque)
            chb_curl_setopt_datacb(handle, CURLOPT_HEADERFUNCTION) { data, size, count, user in
                let t = Unmanaged<Transfer>.fromOpaque(user!).takeUnretainedValue()
                if let data {
                    let line = String(decoding: UnsafeRawBufferPointer(start: data, count: size * count), as: UTF8.self)
                    if line.hasPrefix("HTTP/") { t.headers = [:] }
                    if let colon = line.firstIndex(of: ":") {
                        let name = line[..<colon].lowercased()
                        t.headers[name] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespacesAndNewlines)
                    }
                }
                return size * count
            }
            chb_curl_setopt_pointer(handle, CURLOPT_HEADERDATA, opaque)
            if let caFile = settings.caFile { chb_curl_setopt_string(handle, CURLOPT_CAINFO, caFile) }
            if let pem = settings.caPEM {
                pem.withUnsafeBytes { _ = chb_curl_setopt_blob(handle, CURLOPT_CAINFO_BLOB, $0.baseAddress, $0.count) }
                chb_curl_setopt_pointer(handle, CURLOPT_CAPATH, nil)  // only these CAs, not the system's
            }
            if let pem = settings.clientCertPEM {
                pem.withUnsafeBytes { _ = chb_curl_setopt_blob(handle, CURLOPT_SSLCERT_BLOB, $0.baseAddress, $0.count) }
            }
            if let pem = settings.clientKeyPEM {
                pem.withUnsafeBytes { _ = chb_curl_setopt_blob(handle, CURLOPT_SSLKEY_BLOB, $0.baseAddress, $0.count) }
            }
            if settings.insecureSkipVerify {
                chb_curl_setopt_long(handle, CURLOPT_SSL_VERIFYPEER, 0)
                chb_curl_setopt_long(handle, CURLOPT_SSL_VERIFYHOST, 0)
            }
            if let user = request.username {
                chb_curl_setopt_string(handle, CURLOPT_USERNAME, user)
                if let password = request.password { chb_curl_setopt_string(handle, CURLOPT_PASSWORD, password) }
            }
            if let key = settings.sshPrivateKeyFile {
                chb_curl_setopt_string(handle, CURLOPT_SSH_PRIVATE_KEYFILE, key)
                chb_curl_setopt_long(handle, CURLOPT_SSH_AUTH_TYPES, Int(CURLSSH_AUTH_PUBLICKEY))
            }
            if let pub = settings.sshPublicKeyFile { chb_curl_setopt_string(handle, CURLOPT_SSH_PUBLIC_KEYFILE, pub) }
            if let known = settings.sshKnownHosts { chb_curl_setopt_string(handle, CURLOPT_SSH_KNOWNHOSTS, known) }
            if let fingerprint = settings.sshHostKeySHA256 {
                chb_curl_setopt_string(handle, CURLOPT_SSH_HOST_PUBLIC_KEY_SHA256, fingerprint)
            }
            var headerLines = request.headers.map { "\($0.0): \($0.1)" }
            if request.body != nil || request.bodyFile != nil {
                // The body is always handed over by the read callback: a pointer taken out of a
                // Data's withUnsafeBytes is not valid after the closure (small Data is inline).
                if request.upload {
                    chb_curl_setopt_long(handle, CURLOPT_UPLOAD, 1)
                    chb_curl_setopt_offset(handle, CURLOPT_INFILESIZE_LARGE, curl_off_t(transfer.uploadSize))
                    if request.method != "PUT" { chb_curl_setopt_string(handle, CURLOPT_CUSTOMREQUEST, request.method) }
                } else {
                    chb_curl_setopt_long(handle, CURLOPT_POST, 1)
                    chb_curl_setopt_offset(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(transfer.uploadSize))
                    if request.method != "POST" { chb_curl_setopt_string(handle, CURLOPT_CUSTOMREQUEST, request.method) }
                }
                chb_curl_setopt_datacb(handle, CURLOPT_READFUNCTION) { buffer, size, count, user in
                    let t = Unmanaged<Transfer>.fromOpaque(user!).takeUnretainedValue()
                    guard let buffer else { return 0 }
                    return t.read(into: UnsafeMutableRawBufferPointer(start: buffer, count: size * count))
                }
                chb_curl_setopt_pointer(handle, CURLOPT_READDATA, opaque)
                // Lets libcurl rewind the body when it resends on a new connection.
                chb_curl_setopt_seekcb(handle, CURLOPT_SEEKFUNCTION) { user, offset, origin in
                    let t = Unmanaged<Transfer>.fromOpaque(user!).takeUnretainedValue()
                    guard origin == SEEK_SET, offset >= 0, Int64(offset) <= t.uploadSize else { return 1 }  // CURL_SEEKFUNC_FAIL
                    t.uploadOffset = Int(offset)
                    return 0  // CURL_SEEKFUNC_OK
                }
                chb_curl_setopt_pointer(handle, CURLOPT_SEEKDATA, opaque)
                headerLines.append("Expect:")
            } else if request.method == "HEAD" || request.noBody {
                chb_curl_setopt_long(handle, CURLOPT_NOBODY, 1)
            } else if request.method != "GET" {
                chb_curl_setopt_string(handle, CURLOPT_CUSTOMREQUEST, request.method)
            }
            if let range = request.range {
                chb_curl_setopt_string(handle, CURLOPT_RANGE, "\(range.lowerBound)-\(range.upperBound - 1)")
            }
            if !request.quote.isEmpty { chb_curl_setopt_slist(handle, CURLOPT_QUOTE, slist(request.quote)) }
            if !request.postQuote.isEmpty { chb_curl_setopt_slist(handle, CURLOPT_POSTQUOTE, slist(request.postQuote)) }
            if request.createMissingDirs { chb_curl_setopt_long(handle, CURLOPT_FTP_CREATE_MISSING_DIRS, 1) }
            if request.pathAsIs { chb_curl_setopt_long(handle, CURLOPT_PATH_AS_IS, 1) }
            if !headerLines.isEmpty { chb_curl_setopt_slist(handle, CURLOPT_HTTPHEADER, slist(headerLines)) }
            return curl_easy_perform(handle)
        }
        var status = 0
        chb_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        if let error = transfer.consumeError {
            keep = false
            throw error
        }
        if code != CURLE_OK, transfer.cancelled {
            keep = false
            throw CancellationError()
        }
        if code == CURLE_WRITE_ERROR && transfer.rangeDelivered {
            keep = false  // the rest of the whole-file answer is still on the connection
        } else if code != CURLE_OK {
            keep = false
            let detail = String(decoding: errorBuffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let text = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
            if request.typedFailures {
                throw CurlFailure(kind: CurlFailure.kind(of: code), detail: text, curlCode: Int(code.rawValue))
            }
            throw CurlTransport.error(code, "\(request.method) \(redactedLocation): \(text) (curl error \(code.rawValue))")
        }
        var length: curl_off_t = -1
        chb_curl_getinfo_offset(handle, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length)
        var response = CurlResponse(status: status, headers: transfer.headers, body: transfer.takeBody(),
                                    contentLength: length >= 0 ? Int64(length) : nil)
        response.streamed = transfer.streamed
        var downloaded: curl_off_t = 0
        chb_curl_getinfo_offset(handle, CURLINFO_SIZE_DOWNLOAD_T, &downloaded)
        response.downloaded = Int64(downloaded)
        return response
    }

    /// libcurl's failure codes as storage errors: network trouble is transient.
    static func error(_ code: CURLcode, _ message: String) -> StorageError {
        if code == CURLE_FAILED_INIT, message.contains("establishing ssh session") {
            // libssh2's handshake failed (no banner: the server dropped the connection, e.g. past
            // its MaxStartups, or it was reset). Network trouble, though libcurl calls it an init failure.
            return StorageError(.transient, message)
        }
        switch code {
        case CURLE_COULDNT_CONNECT, CURLE_OPERATION_TIMEDOUT, CURLE_SEND_ERROR, CURLE_RECV_ERROR, CURLE_GOT_NOTHING,
             CURLE_PARTIAL_FILE, CURLE_COULDNT_RESOLVE_HOST, CURLE_SEND_FAIL_REWIND, CURLE_SSL_CONNECT_ERROR, CURLE_HTTP2, CURLE_HTTP2_STREAM,
             CURLE_SSH:
            return StorageError(.transient, message)
        case CURLE_REMOTE_FILE_NOT_FOUND:
            return StorageError(.notFound, message)
        case CURLE_LOGIN_DENIED, CURLE_REMOTE_ACCESS_DENIED:
            return StorageError(.accessDenied, message)
        case CURLE_PEER_FAILED_VERIFICATION:
            return StorageError(.accessDenied, message + " (the server's identity could not be verified)")
        default:
            return StorageError(.permanent, message)
        }
    }

    /// HTTP status codes as storage errors: 5xx, 408 and 429 are transient.
    static func httpError(_ status: Int, _ message: String) -> StorageError {
        switch status {
        case 404: return StorageError(.notFound, message)
        case 401, 403: return StorageError(.accessDenied, message)
        case 416: return StorageError(.invalidRange, message)
        case 408, 429, 500...599: return StorageError(.transient, message)
        default: return StorageError(.permanent, message)
        }
    }
}

final class HandleBox: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer?
    init(_ handle: UnsafeMutableRawPointer?) { self.handle = handle }
}

/// The state one transfer's callbacks share; touched only by the thread running the transfer.
final class Transfer {
    var headers: [String: String] = [:]
    let upload: Data
    let file: StagedFile?
    let uploadSize: Int64
    var uploadOffset = 0
    private var body = Data()
    /// A pooled buffer the response goes into while it fits (a pack or a range of known size).
    private var pool: BufferPool?
    private var pooled: UnsafeMutableRawBufferPointer?
    private var pooledCount = 0

    /// Streaming: where a successful body goes, and what to skip and keep of it when an HTTP
    /// server answered a range request with the whole file (200).
    private var consumer: ByteConsumer?
    private var curl: UnsafeMutableRawPointer?
    private var requested: Range<Int64>?
    private var http = true
    private var decided: Bool?
    private var position: Int64 = 0
    private(set) var streamed: Int64 = 0
    private(set) var consumeError: (any Error)?
    /// The request's cancellation check; once it said yes, the answer stays yes.
    var isCancelled: (@Sendable () -> Bool)?
    private var sawCancel = false
    var cancelled: Bool {
        if !sawCancel, let isCancelled, isCancelled() { sawCancel = true }
        return sawCancel
    }
    /// The requested range of a whole-file answer has been delivered: the transfer was stopped
    /// there instead of downloading the rest of the file.
    private(set) var rangeDelivered = false
    private var wholeFile = false

    init(upload: Data, file: StagedFile?) {
        self.upload = upload
        self.file = file
        uploadSize = file.map { $0.finishedSize ?? fileSize(fd: $0.fd) ?? 0 } ?? Int64(upload.count)
    }

    deinit {
        if let pooled { pool?.give(pooled) }
    }

    /// Sends the next bytes of the body; 0 at its end, CURL_READFUNC_ABORT when the file fails.
    func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let n = Int(min(Int64(buffer.count), uploadSize - Int64(uploadOffset)))
        guard n > 0 else { return 0 }
        if let file {
            let got = pread(file.fd, buffer.baseAddress!, n, off_t(uploadOffset))
            guard got > 0 else { return 0x1000_0000 }  // CURL_READFUNC_ABORT
            uploadOffset += got
            return got
        }
        upload.withUnsafeBytes { raw in
            buffer.baseAddress!.copyMemory(from: raw.baseAddress! + uploadOffset, byteCount: n)
        }
        uploadOffset += n
        return n
    }

    func receiveInto(_ pool: BufferPool) {
        self.pool = pool
        pooled = pool.take()
    }

    func stream(to consumer: @escaping ByteConsumer, handle: UnsafeMutableRawPointer, range: Range<Int64>?, http: Bool) {
        self.consumer = consumer
        curl = handle
        requested = range
        self.http = http
    }

    /// Takes a piece of the response; returns false to abort the transfer (the consumer failed,
    /// or a whole-file answer to a range request has delivered the range).
    func received(_ bytes: UnsafeRawBufferPointer) -> Bool {
        if cancelled { return false }
        if let consumer {
            if decided == nil {
                var status = 0
                chb_curl_getinfo_long(curl, CURLINFO_RESPONSE_CODE, &status)
                decided = http ? (200..<300).contains(status) : true
                wholeFile = http && status == 200 && requested != nil
                position = wholeFile ? 0 : requested?.lowerBound ?? 0
            }
            if decided == true {
                var piece = bytes
                if let requested {  // keep only the requested range of a whole-file answer
                    let lower = max(requested.lowerBound - position, 0)
                    let upper = min(max(requested.upperBound - position, 0), Int64(bytes.count))
                    position += Int64(bytes.count)
                    guard lower < upper else { return true }
                    piece = UnsafeRawBufferPointer(rebasing: bytes[Int(lower)..<Int(upper)])
                }
                do {
                    try consumer(piece)
                    streamed += Int64(piece.count)
                    if wholeFile, let requested, position >= requested.upperBound {
                        rangeDelivered = true  // a server that ignored the range: stop here
                        return false
                    }
                    return true
                } catch {
                    consumeError = error
                    return false
                }
            }
        }
        receivedIntoBody(bytes)
        return true
    }

    private func receivedIntoBody(_ bytes: UnsafeRawBufferPointer) {
        if let buffer = pooled {
            if pooledCount + bytes.count <= buffer.count {
                if bytes.count > 0 { (buffer.baseAddress! + pooledCount).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
                pooledCount += bytes.count
                return
            }
            body = Data(UnsafeRawBufferPointer(rebasing: buffer[0..<pooledCount]))  // larger than expected: plain memory
            pool?.give(buffer)
            pooled = nil
        }
        body.append(bytes.bindMemory(to: UInt8.self))
    }

    func takeBody() -> Data {
        guard let buffer = pooled, let pool else { return body }
        pooled = nil
        return pool.wrap(buffer, count: pooledCount)
    }
}
