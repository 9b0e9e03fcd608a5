import COpenSSL
import Foundation

/// AWS credentials and region for S3 (from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION).
public struct S3Credentials: Sendable {
    public var accessKeyID: String
    public var secretAccessKey: String
    public var region: String
    public init(accessKeyID: String, secretAccessKey: String, region: String = "us-east-1") {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.region = region
    }
}

/// An S3 (or S3-compatible) bucket, path-style addressing, signed with AWS Signature V4 computed
/// here (OpenSSL HMAC): every request carries `x-amz-content-sha256` with the payload's hash.
/// Files live at `prefix/config` and `prefix/<type>/<name>`.
public struct S3Storage: Storage {
    let remote: S3Location
    let credentials: S3Credentials
    let transport: CurlTransport
    /// Some S3-compatible servers (moto among them) canonicalise query values with "/" left
    /// unencoded, unlike AWS. Learned once: a signature refused on a request whose query holds
    /// a "/" is retried the other way, and the way that worked is kept.
    let slashQuirk = Locked(false)

    public init(_ location: S3Location, credentials: S3Credentials, transport: CurlTransport) {
        remote = location
        self.credentials = credentials
        self.transport = transport
    }

    public var location: String { RepositoryURL.s3(remote).description }
    public var defaultConnections: Int { 5 }

    func key(_ handle: Handle) -> String {
        let p = remote.prefix.isEmpty ? "" : remote.prefix + "/"
        return handle.type == .config ? p + "config" : p + handle.type.rawValue + "/" + handle.name
    }

    /// Sends a signed request. `path` is the object key (or empty for the bucket), `query` unencoded pairs.
    func send(_ method: String, key: String?, query: [(String, String)] = [], body: Data? = nil,
              file: StagedFile? = nil, range: Range<Int64>? = nil, consume: ByteConsumer? = nil,
              extraHeaders: [(String, String)] = []) async throws -> CurlResponse {
        var canonicalURI = "/" + S3Signer.encode(remote.bucket)
        if let key { canonicalURI += "/" + key.split(separator: "/", omittingEmptySubsequences: false).map { S3Signer.encode(String($0)) }.joined(separator: "/") }
        let canonicalQuery = query.map { (S3Signer.encode($0.0), S3Signer.encode($0.1, keepSlash: slashQuirk.value)) }
            .sorted { $0 < $1 }.map { "\($0.0)=\($0.1)" }.joined(separator: "&")
        let payloadHash = S3Signer.hex(try file?.sha256() ?? S3Signer.sha256(body ?? Data()))
        let now = Date()
        var headers: [(String, String)] = [("host", remote.hostPort.hasSuffix(":443") || remote.hostPort.hasSuffix(":80") ? remote.host : remote.hostPort),
                                           ("x-amz-content-sha256", payloadHash),
                                           ("x-amz-date", S3Signer.amzDate(now))]
        if let range { headers.append(("range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)")) }
        let authorization = S3Signer.authorization(method: method, uri: canonicalURI, query: canonicalQuery, headers: headers,
                                                   payloadHash: payloadHash, date: now, credentials: credentials)
        var r = CurlRequest(method: method, url: "\(remote.scheme)://\(remote.hostPort)\(canonicalURI)\(canonicalQuery.isEmpty ? "" : "?" + canonicalQuery)")
        r.headers = headers.filter { $0.0 != "host" && $0.0 != "range" } + [("Authorization", authorization)] + extraHeaders
        if body != nil || file != nil {
            r.body = body
            r.bodyFile = file
            r.upload = method == "PUT"
            r.headers.append(("Content-Type", "application/octet-stream"))
        }
        if let range { r.range = range }
        r.consume = consume
        return try await transport.perform(r)
    }

    func checked(_ response: CurlResponse, _ what: String, ok: Set<Int> = [200]) throws -> CurlResponse {
        guard ok.contains(response.status) else {
            let code = S3Signer.xmlValues("Code", in: response.body).first ?? ""
            let message = S3Signer.xmlValues("Message", in: response.body).first ?? ""
            var text = "\(what): HTTP \(response.status)"
            if !code.isEmpty { text += " \(code)" }
            if !message.isEmpty { text += ": \(message)" }
            if code == "InvalidRange" { throw StorageError(.invalidRange, text) }
            throw CurlTransport.httpError(response.status, text)
        }
        return response
    }

    public func create() async throws {
        let response = try await send("PUT", key: nil)
        if response.status == 409 { return }  // the bucket exists (ours)
        _ = try checked(response, "create bucket \(remote.bucket)")
    }

    public func save(_ handle: Handle, data: Data) async throws {
        try handle.validateForRemote()
        _ = try checked(try await send("PUT", key: key(handle), body: data), "save \(handle)")
    }

    /// A conditional put (`If-None-Match: *`): S3 answers 412 when the key exists (409 while
    /// another conditional put of it is under way). Servers that ignore the header are caught by
    /// reading the object back (`confirmCreated`).
    public func saveNew(_ handle: Handle, data: Data) async throws {
        try handle.validateForRemote()
        let response = try await send("PUT", key: key(handle), body: data, extraHeaders: [("If-None-Match", "*")])
        if response.status == 412 { return try await existing(handle, matches: data) }
        if response.status == 409 { throw StorageError(.transient, "create \(handle): another create of it is under way") }
        _ = try checked(response, "create \(handle)")
        try await confirmCreated(handle, data)
    }

    /// Streams the staged file from disk; its SHA-256 is already known for the signature.
    public func save(_ handle: Handle, staged: StagedFile) async throws {
        try handle.validateForRemote()
        _ = try checked(try await send("PUT", key: key(handle), file: staged), "save \(handle)")
    }

    public func load(_ handle: Handle, range: Range<Int64>?) async throws -> Data {
        try handle.validateForRemote()
        if let range, range.isEmpty { return try await loadEmptyRange(handle, range) }
        let response = try checked(try await send("GET", key: key(handle), range: range), "load \(handle)",
                                   ok: range == nil ? [200] : [206])
        if let range, response.body.count != range.count {
            throw StorageError(.invalidRange, "range \(range) outside \(handle): got \(response.body.count) bytes")
        }
        return response.body
    }

    public func stream(_ handle: Handle, range: Range<Int64>, to consume: @escaping ByteConsumer) async throws {
        try handle.validateForRemote()
        if range.isEmpty { return try await stream(emptyRange: range, of: handle) }
        let response = try checked(try await send("GET", key: key(handle), range: range, consume: consume), "load \(handle)", ok: [200, 206])
        guard response.streamed == range.count else {
            throw StorageError(.invalidRange, "range \(range) outside \(handle): got \(response.streamed) bytes")
        }
    }

    public func stat(_ handle: Handle) async throws -> FileInfo {
        try handle.validateForRemote()
        let response = try checked(try await send("HEAD", key: key(handle)), "stat \(handle)")
        guard let size = response.headers["content-length"].flatMap({ Int64($0) }) else {
            throw StorageError(.permanent, "stat \(handle): no Content-Length")
        }
        return FileInfo(name: handle.name, size: size)
    }

    public func list(_ type: FileType) async throws -> [FileInfo] {
        if type == .config { return try await listConfigByStat() }
        let prefix = (remote.prefix.isEmpty ? "" : remote.prefix + "/") + type.rawValue + "/"
        var result: [FileInfo] = []
        var token: String?
        repeat {
            var query = [("list-type", "2"), ("prefix", prefix)]
            if let token { query.append(("continuation-token", token)) }
            var response = try await send("GET", key: nil, query: query)
            if response.status == 403, S3Signer.xmlValues("Code", in: response.body).first == "SignatureDoesNotMatch" {
                slashQuirk.withLock { $0.toggle() }
                response = try await send("GET", key: nil, query: query)
            }
            if response.status == 404, S3Signer.xmlValues("Code", in: response.body).first == "NoSuchBucket" { return [] }
            let body = try checked(response, "list \(type.rawValue)").body
            let keys = S3Signer.xmlValues("Key", in: body)
            let sizes = S3Signer.xmlValues("Size", in: body)
            guard keys.count == sizes.count else { throw StorageError(.permanent, "list \(type.rawValue): malformed listing") }
            for (k, s) in zip(keys, sizes) {
                let name = String(k.dropFirst(prefix.count))
                if !name.isEmpty, !name.contains("/"), let size = Int64(s) { result.append(FileInfo(name: name, size: size)) }
            }
            token = S3Signer.xmlValues("IsTruncated", in: body).first == "true" ? S3Signer.xmlValues("NextContinuationToken", in: body).first : nil
        } while token != nil
        return result
    }

    public func remove(_ handle: Handle) async throws {
        try handle.validateForRemote()
        // S3 deletes are idempotent; the contract wants not-found for a missing file.
        _ = try await stat(handle)
        _ = try checked(try await send("DELETE", key: key(handle)), "remove \(handle)", ok: [200, 204])
    }
}

/// AWS Signature Version 4, with OpenSSL's SHA-256 and HMAC.
enum S3Signer {
    static func sha256(_ data: Data) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        data.withUnsafeBytes { _ = chb_sha256($0.baseAddress, $0.count, &out) }
        return out
    }

    static func hmac(_ key: [UInt8], _ text: String) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        let bytes = Array(text.utf8)
        _ = chb_hmac_sha256(key, key.count, bytes, bytes.count, &out)
        return out
    }

    static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    /// RFC 3986 percent-encoding of everything but unreserved characters, as SigV4 requires.
    static func encode(_ s: String, keepSlash: Bool = false) -> String {
        var out = ""
        for byte in s.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
                out.append(Character(UnicodeScalar(byte)))
            case UInt8(ascii: "/") where keepSlash:
                out.append("/")
            default:
                out += String(format: "%%%02X", byte)
            }
        }
        return out
    }

    static func amzDate(_ date: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        return f.string(from: date)
    }

    static func authorization(method: String, uri: String, query: String, headers: [(String, String)], payloadHash: String,
                              date: Date, credentials: S3Credentials) -> String {
        let sorted = headers.map { ($0.0.lowercased(), $0.1.trimmingCharacters(in: .whitespaces)) }.sorted { $0.0 < $1.0 }
        let canonicalHeaders = sorted.map { "\($0.0):\($0.1)\n" }.joined()
        let signedHeaders = sorted.map(\.0).joined(separator: ";")
        let canonicalRequest = [method, uri, query, canonicalHeaders, signedHeaders, payloadHash].joined(separator: "\n")
        let amz = amzDate(date)
        let day = String(amz.prefix(8))
        let scope = "\(day)/\(credentials.region)/s3/aws4_request"
        let stringToSign = ["AWS4-HMAC-SHA256", amz, scope, hex(sha256(Data(canonicalRequest.utf8)))].joined(separator: "\n")
        var key = hmac(Array(("AWS4" + credentials.secretAccessKey).utf8), day)
        key = hmac(key, credentials.region)
        key = hmac(key, "s3")
        key = hmac(key, "aws4_request")
        let signature = hex(hmac(key, stringToSign))
        return "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), SignedHeaders=\(signedHeaders), Signature=\(signature)"
    }

    /// The text of every <name>…</name> element, entities decoded. Enough for S3's flat answers.
    static func xmlValues(_ name: String, in body: Data) -> [String] {
        let text = String(decoding: body, as: UTF8.self)
        var values: [String] = []
        var search = text.startIndex
        while let open = text.range(of: "<\(name)>", range: search..<text.endIndex),
              let close = text.range(of: "</\(name)>", range: open.upperBound..<text.endIndex) {
            values.append(String(text[open.upperBound..<close.lowerBound])
                .replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
                .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
                .replacingOccurrences(of: "&amp;", with: "&"))
            search = close.upperBound
        }
        return values
    }
}
