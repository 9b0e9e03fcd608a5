import Foundation

/// A client of restic's REST backend protocol (v2, falling back to v1 listings):
/// `POST /?create=true`, `GET|HEAD|POST|DELETE /config` and `/{type}/{name}`, `GET /{type}/`.
public struct RESTStorage: Storage {
    let remote: RESTLocation
    let transport: CurlTransport
    static let v2 = "application/vnd.x.restic.rest.v2"

    public init(_ location: RESTLocation, transport: CurlTransport) {
        self.remote = location
        self.transport = transport
    }

    public var location: String { RepositoryURL.rest(remote).description }
    public var defaultConnections: Int { 5 }

    func url(_ handle: Handle?) -> String {
        let base = remote.baseURL(withPassword: false)
        guard let handle else { return base }
        return handle.type == .config ? base + "config" : base + handle.type.rawValue + "/" + handle.name
    }

    func request(_ method: String, _ url: String) -> CurlRequest {
        var r = CurlRequest(method: method, url: url)
        r.username = remote.username
        r.password = remote.password
        return r
    }

    func checked(_ response: CurlResponse, _ what: String, ok: Set<Int> = [200]) throws -> CurlResponse {
        guard ok.contains(response.status) else {
            let detail = String(decoding: response.body.prefix(200), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw CurlTransport.httpError(response.status, "\(what): HTTP \(response.status)\(detail.isEmpty ? "" : " " + detail)")
        }
        return response
    }

    public func create() async throws {
        _ = try checked(try await transport.perform(request("POST", url(nil) + "?create=true")), "create repository at \(location)")
    }

    public func save(_ handle: Handle, data: Data) async throws {
        try await post(handle) { $0.body = data }
    }

    /// restic's REST protocol has no create-only upload, but restic's rest-server and ours refuse
    /// to replace `config` (403); rclone's replaces it. So: a name already taken is refused here
    /// before uploading, a 403 from a server that has the file is its refusal, and a 200 is
    /// confirmed by reading the file back (`confirmCreated`).
    public func saveNew(_ handle: Handle, data: Data) async throws {
        try handle.validateForRemote()
        if try await exists(handle) { return try await existing(handle, matches: data) }
        var r = request("POST", url(handle))
        r.body = data
        r.headers = [("Content-Type", "application/octet-stream")]
        let response = try await transport.perform(r)
        if response.status == 403, try await exists(handle) { return try await existing(handle, matches: data) }
        _ = try checked(response, "create \(handle)")
        try await confirmCreated(handle, data)
    }

    /// Streams the staged file from disk.
    public func save(_ handle: Handle, staged: StagedFile) async throws {
        try staged.finish()
        try await post(handle) { $0.bodyFile = staged }
    }

    private func post(_ handle: Handle, body: (inout CurlRequest) -> Void) async throws {
        try handle.validateForRemote()
        var r = request("POST", url(handle))
        body(&r)
        r.headers = [("Content-Type", "application/octet-stream")]
        _ = try checked(try await transport.perform(r), "save \(handle)")
    }

    public func load(_ handle: Handle, range: Range<Int64>?) async throws -> Data {
        try handle.validateForRemote()
        if let range, range.isEmpty { return try await loadEmptyRange(handle, range) }
        var r = request("GET", url(handle))
        r.range = range
        let response = try checked(try await transport.perform(r), "load \(handle)", ok: range == nil ? [200] : [200, 206])
        guard let range else { return response.body }
        if response.status == 200 {  // server ignored the range
            guard range.upperBound <= Int64(response.body.count) else {
                throw StorageError(.invalidRange, "range \(range) outside \(handle) (\(response.body.count) bytes)")
            }
            return response.body.subdata(in: Int(range.lowerBound)..<Int(range.upperBound))
        }
        guard response.body.count == range.count else {
            throw StorageError(.invalidRange, "range \(range) outside \(handle): got \(response.body.count) bytes")
        }
        return response.body
    }

    public func stream(_ handle: Handle, range: Range<Int64>, to consume: @escaping ByteConsumer) async throws {
        try handle.validateForRemote()
        if range.isEmpty { return try await stream(emptyRange: range, of: handle) }
        var r = request("GET", url(handle))
        r.range = range
        r.consume = consume
        let response = try checked(try await transport.perform(r), "load \(handle)", ok: [200, 206])
        guard response.streamed == range.count else {
            throw StorageError(.invalidRange, "range \(range) outside \(handle): got \(response.streamed) bytes")
        }
    }

    public func stat(_ handle: Handle) async throws -> FileInfo {
        try handle.validateForRemote()
        let response = try checked(try await transport.perform(request("HEAD", url(handle))), "stat \(handle)")
        guard let size = response.headers["content-length"].flatMap({ Int64($0) }) else {
            throw StorageError(.permanent, "stat \(handle): the server sent no Content-Length")
        }
        return FileInfo(name: handle.name, size: size)
    }

    public func list(_ type: FileType) async throws -> [FileInfo] {
        if type == .config { return try await listConfigByStat() }
        var r = request("GET", url(nil) + type.rawValue + "/")
        r.headers = [("Accept", Self.v2)]
        let response = try checked(try await transport.perform(r), "list \(type.rawValue)")
        struct Entry: Decodable { let name: String; let size: Int64 }
        if let entries = try? JSONDecoder().decode([Entry].self, from: response.body) {
            return entries.map { FileInfo(name: $0.name, size: $0.size) }
        }
        // v1 server: names only; sizes by HEAD.
        guard let names = try? JSONDecoder().decode([String].self, from: response.body) else {
            throw StorageError(.permanent, "list \(type.rawValue): the server's answer is not a restic REST listing")
        }
        var infos: [FileInfo] = []
        for name in names { infos.append(try await stat(Handle(type, name))) }
        return infos
    }

    public func remove(_ handle: Handle) async throws {
        try handle.validateForRemote()
        _ = try checked(try await transport.perform(request("DELETE", url(handle))), "remove \(handle)")
    }
}
