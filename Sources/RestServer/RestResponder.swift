import Foundation
import Hummingbird
import Logging
import Metrics
import NIOCore

/// A request's context: Hummingbird's, and the client's address (for the failure back-off).
struct RestRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let remoteAddress: SocketAddress?

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }
}

/// The request handling, independent of sockets: routing, authentication, the file operations.
/// Every file operation goes through `RootDirectory` (links are never followed) and every
/// upload through `Uploads` (temporary names that the sweep can tell apart).
struct RestResponder: HTTPResponder {
    typealias Context = RestRequestContext
    static let types: Set<String> = ["data", "keys", "locks", "snapshots", "index"]
    static let v2 = "application/vnd.x.restic.rest.v2"

    let root: String
    let rootDirectory: RootDirectory
    let uploads = Uploads()
    /// Up to 16 MiB of buffers that file downloads reuse (about two per connection sending).
    let sendBuffers = SendBuffers(limit: 16)
    let configuration: RestServerConfiguration
    let auth: Htpasswd?
    let bcrypt: BcryptPool?
    let logger: Logger

    init(configuration: RestServerConfiguration, logger: Logger) throws {
        var root = configuration.path
        while root.count > 1 && root.hasSuffix("/") { root.removeLast() }
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        self.root = root
        rootDirectory = try RootDirectory(path: root)
        self.configuration = configuration
        self.logger = logger
        let pool = configuration.htpasswdFile.map { _ in
            BcryptPool(threads: configuration.bcryptThreads, queueLimit: configuration.bcryptQueueLimit)
        }
        bcrypt = pool
        auth = try configuration.htpasswdFile.map {
            try Htpasswd(path: $0, pool: pool!, failureDelay: configuration.authFailureDelay,
                         waiterLimit: configuration.authFailureWaiters, hooks: configuration.hooks)
        }
    }

    /// A file below the root: the directories leading to it, and its name.
    struct Location {
        let directory: [String]
        let name: String
    }

    /// What a request path names.
    enum Target {
        case repository(String)
        case config(String)
        case listing(String, String)
        case file(String, String, String)
    }

    func respond(to request: Request, context: Context) async throws -> Response {
        do {
            let response = try await handle(request, client: context.remoteAddress?.ipAddress ?? "unknown")
            logger.info("\(request.method) \(request.uri.path) \(response.status.code)")
            Self.count(request, response.status.code)
            return response
        } catch let error as HTTPFailure {
            logger.info("\(request.method) \(request.uri.path) \(error.status.code)")
            Self.count(request, error.status.code)
            if error.status.code >= 500 { logger.error("\(request.method) \(request.uri.path): \(error.message)") }
            var headers = error.headers
            headers[.contentType] = "text/plain; charset=utf-8"
            if error.status == .unauthorized { headers[.wwwAuthenticate] = "Basic realm=\"chebackup\"" }
            return Response(status: error.status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: error.message + "\n")))
        }
    }

    /// Requests by method and status (metrics).
    static func count(_ request: Request, _ status: Int) {
        Counter(label: "chebackup_rest_requests_total", dimensions: [("method", request.method.rawValue), ("status", String(status))]).increment()
    }

    func handle(_ request: Request, client: String) async throws -> Response {
        let user = try await authenticate(request, client: client)
        let target = try parse(request.uri.path)
        if configuration.privateRepos {
            let repo: String
            switch target {
            case .repository(let r), .config(let r), .listing(let r, _), .file(let r, _, _): repo = r
            }
            guard let user, repo == user || repo.hasPrefix(user + "/") else {
                throw HTTPFailure(.forbidden, "private repositories: only /\(user ?? "<user>")/ is yours")
            }
        }
        switch (request.method, target) {
        case (.post, .repository(let repo)):
            guard request.uri.queryParameters["create"] == "true" else { throw HTTPFailure(.badRequest, "POST to a repository needs ?create=true") }
            try createRepository(repo)
            return Response(status: .ok)
        case (.head, .config(let repo)), (.get, .config(let repo)):
            return try serveFile(configLocation(repo), request: request)
        case (.post, .config(let repo)):
            return try await receive(request, into: configLocation(repo), type: "config")
        case (.delete, .config(let repo)):
            if configuration.appendOnly { throw HTTPFailure(.forbidden, "append-only: the config cannot be deleted") }
            try remove(configLocation(repo))
            return Response(status: .ok)
        case (.get, .listing(let repo, let type)):
            return try list(repo: repo, type: type, v2: (request.headers[.accept] ?? "").contains(Self.v2))
        case (.head, .file(let repo, let type, let name)), (.get, .file(let repo, let type, let name)):
            return try serveFile(fileLocation(repo, type, name), request: request, releasingCache: type == "data")
        case (.post, .file(let repo, let type, let name)):
            return try await receive(request, into: fileLocation(repo, type, name), type: type)
        case (.delete, .file(let repo, let type, let name)):
            if configuration.appendOnly && type != "locks" {
                throw HTTPFailure(.forbidden, "append-only: only locks may be deleted")
            }
            try remove(fileLocation(repo, type, name))
            return Response(status: .ok)
        default:
            throw HTTPFailure(.methodNotAllowed, "\(request.method) is not allowed here")
        }
    }

    // MARK: paths

    func parse(_ rawPath: String) throws -> Target {
        let path = rawPath.removingPercentEncoding ?? rawPath
        var parts = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        for part in parts {
            guard part != ".", part != "..", !part.hasPrefix("."), part.count <= 255,
                  part.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }) else {
                throw HTTPFailure(.badRequest, "invalid path")
            }
        }
        guard parts.count <= 16 else { throw HTTPFailure(.badRequest, "path too deep") }
        if parts.last == "config" {
            parts.removeLast()
            return .config(parts.joined(separator: "/"))
        }
        if parts.count >= 2, Self.types.contains(parts[parts.count - 2]), isObjectName(parts[parts.count - 1]) {
            let name = parts.removeLast()
            let type = parts.removeLast()
            return .file(parts.joined(separator: "/"), type, name)
        }
        if let last = parts.last, Self.types.contains(last) {
            parts.removeLast()
            return .listing(parts.joined(separator: "/"), last)
        }
        if parts.count >= 2, Self.types.contains(parts[parts.count - 2]) {
            throw HTTPFailure(.badRequest, "invalid file name")
        }
        return .repository(parts.joined(separator: "/"))
    }

    /// restic's names: 64 lowercase hex digits.
    func isObjectName(_ name: String) -> Bool {
        name.utf8.count == 64 && name.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }

    /// The directories of a repository below the root (none: the root itself).
    func repoComponents(_ repo: String) -> [String] { repo.split(separator: "/").map(String.init) }

    func configLocation(_ repo: String) -> Location { Location(directory: repoComponents(repo), name: "config") }

    func fileLocation(_ repo: String, _ type: String, _ name: String) -> Location {
        let dir = repoComponents(repo) + (type == "data" ? ["data", String(name.prefix(2))] : [type])
        return Location(directory: dir, name: name)
    }

    func createRepository(_ repo: String) throws {
        try rootDirectory.withDirectory(repoComponents(repo), create: true) { dir in
            for type in Self.types where mkdirat(dir, type, 0o700) != 0 && errno != EEXIST {
                throw HTTPFailure(.internalServerError, "cannot create the repository: \(errorText())")
            }
            let data = openSubdirectory(dir, "data")
            guard data >= 0 else { throw RootDirectory.failure(errno) }
            defer { close(data) }
            for i in 0..<256 where mkdirat(data, String(format: "%02x", i), 0o700) != 0 && errno != EEXIST {
                throw HTTPFailure(.internalServerError, "cannot create the repository: \(errorText())")
            }
        }
    }

    func remove(_ location: Location) throws {
        try rootDirectory.withDirectory(location.directory) { dir in
            guard unlinkat(dir, location.name, 0) == 0 else {
                throw errno == ENOENT ? HTTPFailure(.notFound, "not found") : HTTPFailure(.internalServerError, "cannot delete: \(errorText())")
            }
        }
    }
}

struct HTTPFailure: Error {
    let status: HTTPResponse.Status
    let message: String
    var headers: HTTPFields = [:]
    init(_ status: HTTPResponse.Status, _ message: String) {
        self.status = status
        self.message = message
    }
}

func errorText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }
