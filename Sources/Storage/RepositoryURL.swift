import Foundation

/// A repository location in restic's syntax. This release knows `local:/path` and plain paths;
/// `rest:`, `s3:` and `sftp:` are recognised and refused with a clear message until their
/// backends land.
public enum RepositoryURL: Hashable, Sendable, CustomStringConvertible {
    case local(path: String)

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
        for scheme in ["rest:", "s3:", "sftp:"] where trimmed.hasPrefix(scheme) {
            throw ParseError(description: "\(scheme.dropLast()) repositories are not supported by this build yet")
        }
        if let colon = trimmed.firstIndex(of: ":"), !trimmed[..<colon].contains("/"),
           trimmed[..<colon].count > 1 {
            throw ParseError(description: "unknown repository type \"\(trimmed[..<colon])\" (use local:/path)")
        }
        return .local(path: absolute(trimmed))
    }

    /// Safe to print: carries no password.
    public var description: String {
        switch self {
        case .local(let path): return "local:\(path)"
        }
    }

    static func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        return FileManager.default.currentDirectoryPath + "/" + path
    }
}
