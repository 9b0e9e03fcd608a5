import Foundation

/// A repository location in restic's syntax:
/// `local:/path` (or a plain path), `rest:http://host:port/path`, `rest:https://user:pass@host/path`,
/// `rest:host:port/path` (https), `s3:host[:port]/bucket[/prefix]` (https), `s3:http://host:port/bucket[/prefix]`,
/// `sftp:user@host:/path`, `sftp:user@host:relative/path`, `sftp:user@host:port//absolute/path`.
public enum RepositoryURL: Hashable, Sendable, CustomStringConvertible {
    case local(path: String)
    case rest(RESTLocation)
    case s3(S3Location)
    case sftp(SFTPLocation)

    public struct ParseError: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public static func parse(_ text: String) throws -> RepositoryURL {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty else { throw ParseError(description: "empty repository URL") }
        if trimmed.hasPrefix("local:") {
            let path = String(trimmed.dropFirst("local:".count))
            guard !path.isEmpty else { throw ParseError(description: "local: URL without a path") }
            return .local(path: absolute(path))
        }
        if trimmed.hasPrefix("rest:") { return .rest(try RESTLocation.parse(String(trimmed.dropFirst(5)))) }
        if trimmed.hasPrefix("s3:") { return .s3(try S3Location.parse(String(trimmed.dropFirst(3)))) }
        if trimmed.hasPrefix("sftp:") { return .sftp(try SFTPLocation.parse(String(trimmed.dropFirst(5)))) }
        if let colon = trimmed.firstIndex(of: ":"), !trimmed[..<colon].contains("/"), trimmed[..<colon].count > 1 {
            throw ParseError(description: "unknown repository type \"\(trimmed[..<colon])\" (use local:, rest:, s3: or sftp:)")
        }
        return .local(path: absolute(trimmed))
    }

    /// Safe to print: carries no password.
    public var description: String {
        switch self {
        case .local(let path): "local:\(path)"
        case .rest(let l): "rest:\(l.baseURL(withPassword: false))"
        case .s3(let l): "s3:\(l.scheme)://\(l.hostPort)/\(l.bucket)\(l.prefix.isEmpty ? "" : "/" + l.prefix)"
        case .sftp(let l): "sftp:\(l.user.map { $0 + "@" } ?? "")\(l.host):\(l.port)/\(l.path)"
        }
    }

    static func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        return FileManager.default.currentDirectoryPath + "/" + path
    }

    /// host, host:port or [v6]:port → (host, port)
    static func splitHostPort(_ text: String, defaultPort: Int, what: String) throws -> (String, Int) {
        var host = text
        var port = defaultPort
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw ParseError(description: "\(what): bad IPv6 address") }
            host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            if rest.hasPrefix(":") {
                guard let p = Int(rest.dropFirst()), (1...65535).contains(p) else { throw ParseError(description: "\(what): bad port") }
                port = p
            }
        } else if let colon = text.lastIndex(of: ":") {
            host = String(text[..<colon])
            guard let p = Int(text[text.index(after: colon)...]), (1...65535).contains(p) else {
                throw ParseError(description: "\(what): bad port in \"\(text)\"")
            }
            port = p
        }
        guard !host.isEmpty else { throw ParseError(description: "\(what): missing host") }
        return (host, port)
    }
}

public struct RESTLocation: Hashable, Sendable {
    public var scheme: String
    public var host: String
    public var port: Int
    public var path: String
    public var username: String?
    public var password: String?

    static func parse(_ text: String) throws -> RESTLocation {
        var rest = text
        var scheme = "https"
        for s in ["http://", "https://"] where rest.hasPrefix(s) {
            scheme = String(s.dropLast(3))
            rest = String(rest.dropFirst(s.count))
        }
        var username: String?
        var password: String?
        let authority = rest.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        var hostPart = String(authority[0])
        let path = authority.count > 1 ? String(authority[1]) : ""
        if let at = hostPart.lastIndex(of: "@") {
            let userinfo = hostPart[..<at]
            hostPart = String(hostPart[hostPart.index(after: at)...])
            let pieces = userinfo.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            username = String(pieces[0]).removingPercentEncoding
            if pieces.count > 1 { password = String(pieces[1]).removingPercentEncoding }
        }
        let (host, port) = try RepositoryURL.splitHostPort(hostPart, defaultPort: scheme == "https" ? 443 : 80, what: "rest URL")
        return RESTLocation(scheme: scheme, host: host, port: port, path: path.trimmingCharacters(in: CharacterSet(charactersIn: "/")),
                            username: username, password: password)
    }

    var hostPort: String { (host.contains(":") ? "[\(host)]" : host) + ":\(port)" }

    /// scheme://[user@]host:port/path/ — with the password only when asked (never for printing).
    public func baseURL(withPassword: Bool) -> String {
        var auth = ""
        if let username {
            auth = username.addingPercentEncoding(withAllowedCharacters: .urlUserAllowed) ?? username
            if withPassword, let password { auth += ":" + (password.addingPercentEncoding(withAllowedCharacters: .urlPasswordAllowed) ?? password) }
            auth += "@"
        }
        return "\(scheme)://\(auth)\(hostPort)/\(path.isEmpty ? "" : path + "/")"
    }
}

public struct S3Location: Hashable, Sendable {
    public var scheme: String
    public var host: String
    public var port: Int
    public var bucket: String
    public var prefix: String

    static func parse(_ text: String) throws -> S3Location {
        var rest = text
        var scheme = "https"
        for s in ["http://", "https://"] where rest.hasPrefix(s) {
            scheme = String(s.dropLast(3))
            rest = String(rest.dropFirst(s.count))
        }
        let parts = rest.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        guard parts.count >= 2 else { throw ParseError(description: "s3 URL needs a host and a bucket: s3:host[:port]/bucket[/prefix]") }
        let (host, port) = try RepositoryURL.splitHostPort(parts[0], defaultPort: scheme == "https" ? 443 : 80, what: "s3 URL")
        return S3Location(scheme: scheme, host: host, port: port, bucket: parts[1], prefix: parts.dropFirst(2).joined(separator: "/"))
    }

    var hostPort: String { (host.contains(":") ? "[\(host)]" : host) + ":\(port)" }
    typealias ParseError = RepositoryURL.ParseError
}

public struct SFTPLocation: Hashable, Sendable {
    public var user: String?
    public var host: String
    public var port: Int
    /// Absolute when it starts with "/", else relative to the user's home.
    public var path: String

    static func parse(_ text: String) throws -> SFTPLocation {
        // sftp:user@host:/abs, sftp:user@host:rel, sftp:user@host:port//abs, sftp://user@host:port/abs
        var rest = text
        if rest.hasPrefix("//") { rest = String(rest.dropFirst(2)) }
        var user: String?
        if let at = rest.firstIndex(of: "@"), !rest[..<at].contains("/") {
            user = String(rest[..<at])
            rest = String(rest[rest.index(after: at)...])
        }
        guard let colon = rest.firstIndex(of: ":") else {
            // sftp://host/path form without port
            guard let slash = rest.firstIndex(of: "/") else { throw ParseError(description: "sftp URL needs host:path") }
            return SFTPLocation(user: user, host: String(rest[..<slash]), port: 22, path: String(rest[slash...]))
        }
        let host = String(rest[..<colon])
        var after = String(rest[rest.index(after: colon)...])
        var port = 22
        let digits = after.prefix { $0.isNumber }
        if !digits.isEmpty, after.dropFirst(digits.count).hasPrefix("/") {
            guard let p = Int(digits), (1...65535).contains(p) else { throw ParseError(description: "sftp URL: bad port") }
            port = p
            after = String(after.dropFirst(digits.count))
            // host:port//abs → "/abs"; host:port/rel → "rel"
            after = after.hasPrefix("//") ? String(after.dropFirst()) : String(after.dropFirst())
        }
        guard !host.isEmpty, !after.isEmpty else { throw ParseError(description: "sftp URL needs user@host:path") }
        while after.count > 1 && after.hasSuffix("/") { after.removeLast() }
        return SFTPLocation(user: user, host: host, port: port, path: after)
    }

    typealias ParseError = RepositoryURL.ParseError
}
