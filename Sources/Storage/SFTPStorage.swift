import CCurl
import Foundation

/// A repository on an SFTP server, through libcurl and libssh2: public-key login (ed25519), the
/// server's host key checked against known_hosts or a pinned SHA-256 fingerprint, connections
/// reused. Layout as the local backend's (`data/XX/`); uploads go to `tmp/` and are renamed into
/// place, so a dropped upload leaves nothing visible.
public struct SFTPStorage: Storage {
    let remote: SFTPLocation
    let transport: CurlTransport

    public init(_ location: SFTPLocation, transport: CurlTransport) {
        remote = location
        self.transport = transport
    }

    public var location: String { RepositoryURL.sftp(remote).description }
    public var defaultConnections: Int { 4 }

    /// The repository directory's URL: the root URL plus the path (relative ones under "~").
    var urlBase: String {
        let path = remote.path.hasPrefix("/") ? String(remote.path.dropFirst()) : "~/" + remote.path
        return rootURL + (path.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? path)
    }

    /// The path as the server's quote commands see it (relative paths are relative to the home).
    var serverBase: String { remote.path }

    func relative(_ handle: Handle) throws -> String {
        try handle.validateForRemote()
        if handle.type == .config { return "config" }
        return handle.type == .data ? "data/\(handle.name.prefix(2))/\(handle.name)" : "\(handle.type.rawValue)/\(handle.name)"
    }

    static func quoted(_ path: String) -> String {
        "\"" + path.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    func commands(_ quote: [String]) async throws {
        var r = CurlRequest(url: rootURL)
        r.noBody = true
        r.quote = quote
        _ = try await transport.perform(r)
    }

    /// The server's root, which always exists: quote commands run from a request to it.
    var rootURL: String {
        let user = remote.user.map { ($0.addingPercentEncoding(withAllowedCharacters: .urlUserAllowed) ?? $0) + "@" } ?? ""
        let host = remote.host.contains(":") ? "[\(remote.host)]" : remote.host
        return "sftp://\(user)\(host):\(remote.port)/"
    }

    public func create() async throws {
        var dirs: [String] = []
        var prefix = ""
        for component in remote.path.split(separator: "/") {
            prefix += (prefix.isEmpty && !remote.path.hasPrefix("/") ? "" : "/") + component
            dirs.append(prefix)
        }
        dirs += FileType.allCases.filter { $0 != .config }.map { serverBase + "/" + $0.rawValue } + [serverBase + "/tmp"]
        dirs += (0..<256).map { serverBase + "/data/" + String(format: "%02x", $0) }
        var r = CurlRequest(url: rootURL)
        r.noBody = true
        r.quote = dirs.map { "*mkdir " + Self.quoted($0) }  // "*": a directory that exists is no failure
        _ = try await transport.perform(r)
        _ = try await listDirectory("data")  // fails when the repository directory is not there
    }

    public func save(_ handle: Handle, data: Data) async throws {
        try await upload(handle) { $0.body = data }
    }

    /// Streams the staged file from disk.
    public func save(_ handle: Handle, staged: StagedFile) async throws {
        try staged.finish()
        try await upload(handle) { $0.bodyFile = staged }
    }

    /// The upload's rename fails when the name exists (OpenSSH's SSH_FXP_RENAME does not
    /// replace); a server whose rename replaces is caught by reading the file back.
    public func saveNew(_ handle: Handle, data: Data) async throws {
        if try await upload(handle, body: { $0.body = data }) {
            return try await existing(handle, matches: data)
        }
        try await confirmCreated(handle, data)
    }

    /// Uploads to a temporary name in the repository's `tmp/`, then renames into place. True
    /// when the rename failed because the name exists: `save` then succeeds (same name, same
    /// content), `saveNew` compares.
    @discardableResult
    private func upload(_ handle: Handle, body: (inout CurlRequest) -> Void) async throws -> Bool {
        let rel = try relative(handle)
        let temp = "tmp/\(handle.type.rawValue)-\(UUID().uuidString)"
        var r = CurlRequest(method: "PUT", url: urlBase + "/" + temp)
        body(&r)
        r.upload = true
        let targetDir = serverBase + "/" + (rel as NSString).deletingLastPathComponent
        r.postQuote = ["*mkdir \(Self.quoted(targetDir))",
                       "rename \(Self.quoted(serverBase + "/" + temp)) \(Self.quoted(serverBase + "/" + rel))"]
        do {
            _ = try await transport.perform(r)
        } catch let error as StorageError {
            // The rename fails when the target exists (SFTP v3 does not replace): same content by name.
            try? await commands(["*rm " + Self.quoted(serverBase + "/" + temp)])
            if error.code == .permanent, (try? await stat(handle)) != nil { return true }
            throw error
        }
        return false
    }

    public func load(_ handle: Handle, range: Range<Int64>?) async throws -> Data {
        let rel = try relative(handle)
        if let range {
            let size = try await stat(handle).size
            guard range.lowerBound >= 0, range.upperBound <= size else {
                throw StorageError(.invalidRange, "range \(range) outside \(handle) (\(size) bytes)")
            }
            if range.isEmpty { return Data() }
        }
        var r = CurlRequest(url: urlBase + "/" + rel)
        r.range = range
        let response = try await transport.perform(r)
        if let range, response.body.count != range.count {
            throw StorageError(.invalidRange, "range \(range) of \(handle): got \(response.body.count) bytes")
        }
        return response.body
    }

    public func stream(_ handle: Handle, range: Range<Int64>, to consume: @escaping ByteConsumer) async throws {
        let rel = try relative(handle)
        let size = try await stat(handle).size
        guard range.lowerBound >= 0, range.upperBound <= size else {
            throw StorageError(.invalidRange, "range \(range) outside \(handle) (\(size) bytes)")
        }
        if range.isEmpty { return }
        var r = CurlRequest(url: urlBase + "/" + rel)
        r.range = range
        r.consume = consume
        let response = try await transport.perform(r)
        guard response.streamed == range.count else {
            throw StorageError(.invalidRange, "range \(range) of \(handle): got \(response.streamed) bytes")
        }
    }

    public func stat(_ handle: Handle) async throws -> FileInfo {
        var r = CurlRequest(url: urlBase + "/" + (try relative(handle)))
        r.noBody = true
        let response = try await transport.perform(r)
        if let size = response.contentLength { return FileInfo(name: handle.name, size: size) }
        // libcurl reports no size for some files (empty ones): ask the directory listing.
        let rel = try relative(handle)
        let parent = (rel as NSString).deletingLastPathComponent
        guard let entry = try await listDirectory(parent).first(where: { $0.name == (rel as NSString).lastPathComponent }) else {
            throw StorageError(.notFound, "stat \(handle): not found")
        }
        return FileInfo(name: handle.name, size: entry.size)
    }

    /// A long listing ("-rw------- 1 user group SIZE Mon DD HH:MM NAME") of one directory.
    func listDirectory(_ rel: String) async throws -> [(name: String, size: Int64, isDir: Bool)] {
        let r = CurlRequest(url: urlBase + "/" + rel + "/")
        let body: Data
        do {
            body = try await transport.perform(r).body
        } catch let error as StorageError where error.code == .notFound {
            return []
        }
        var entries: [(String, Int64, Bool)] = []
        for line in String(decoding: body, as: UTF8.self).split(separator: "\n") {
            let fields = line.split(separator: " ", maxSplits: 8, omittingEmptySubsequences: true)
            guard fields.count == 9, let size = Int64(fields[4]) else { continue }
            let name = String(fields[8]).trimmingCharacters(in: .whitespacesAndNewlines)
            if name.hasPrefix(".") { continue }
            entries.append((name, size, fields[0].hasPrefix("d")))
        }
        return entries
    }

    public func list(_ type: FileType) async throws -> [FileInfo] {
        if type == .config { return try await listConfigByStat() }
        if type != .data {
            return try await listDirectory(type.rawValue).filter { !$0.isDir }.map { FileInfo(name: $0.name, size: $0.size) }
        }
        var result: [FileInfo] = []
        for dir in try await listDirectory("data") where dir.isDir {
            result += try await listDirectory("data/" + dir.name).filter { !$0.isDir }.map { FileInfo(name: $0.name, size: $0.size) }
        }
        return result
    }

    public func remove(_ handle: Handle) async throws {
        _ = try await stat(handle)
        try await commands(["rm " + Self.quoted(serverBase + "/" + (try relative(handle)))])
    }
}
