import Foundation
import Hummingbird
import HummingbirdBcrypt
import Synchronization

/// Basic authentication against an htpasswd file with bcrypt entries (`htpasswd -B`). The file is
/// re-read when it changes; a verified password is remembered for a minute, because bcrypt is
/// slow on purpose and a backup makes thousands of requests.
final class Htpasswd: Sendable {
    let path: String
    private struct State {
        var users: [String: String] = [:]
        var modified: Date?
        var verified: [String: (password: String, until: Date)] = [:]
    }
    private let state = Mutex(State())

    init(path: String) throws {
        self.path = path
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw HTTPFailure(.internalServerError, "cannot read htpasswd file \(path)")
        }
        try reloadIfChanged()
    }

    private func reloadIfChanged() throws {
        let modified = (try? FileManager.default.attributesOfItem(atPath: path)[.modificationDate]) as? Date
        if state.withLock({ $0.modified == modified && modified != nil }) { return }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return }
        var users: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard !trimmed.isEmpty, !trimmed.hasPrefix("#"), let colon = trimmed.firstIndex(of: ":") else { continue }
            users[String(trimmed[..<colon])] = String(trimmed[trimmed.index(after: colon)...])
        }
        state.withLock {
            $0.users = users
            $0.modified = modified
            $0.verified = [:]
        }
    }

    /// True when `user` and `password` match an entry.
    func check(user: String, password: String) -> Bool {
        try? reloadIfChanged()
        let now = Date()
        let (hash, cached) = state.withLock { s -> (String?, Bool) in
            if let v = s.verified[user], v.until > now, v.password == password { return (s.users[user], true) }
            return (s.users[user], false)
        }
        guard let hash else { return false }
        if cached { return true }
        guard hash.hasPrefix("$2"), Bcrypt.verify(password, hash: hash) else { return false }
        state.withLock { $0.verified[user] = (password, now.addingTimeInterval(60)) }
        return true
    }
}

extension RestResponder {
    /// The authenticated user; nil when the server runs without an htpasswd file.
    func authenticate(_ request: Request) throws -> String? {
        guard let auth else { return nil }
        guard let header = request.headers[.authorization], header.hasPrefix("Basic "),
              let decoded = Data(base64Encoded: String(header.dropFirst(6))).map({ String(decoding: $0, as: UTF8.self) }),
              let colon = decoded.firstIndex(of: ":") else {
            throw HTTPFailure(.unauthorized, "authentication required")
        }
        let user = String(decoded[..<colon])
        guard auth.check(user: user, password: String(decoded[decoded.index(after: colon)...])) else {
            throw HTTPFailure(.unauthorized, "wrong user name or password")
        }
        return user
    }
}
