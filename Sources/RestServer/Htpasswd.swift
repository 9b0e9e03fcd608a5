import Foundation
import Hummingbird
import HummingbirdBcrypt
import Synchronization

/// Basic authentication against an htpasswd file with bcrypt entries (`htpasswd -B`). The file is
/// re-read when it changes. bcrypt is slow on purpose and a backup makes thousands of requests,
/// so: a verified user and password is remembered for five minutes (keyed by the SHA-256 of
/// both, the password itself is not kept); checks run on a small `BcryptPool`, never on the
/// threads that serve requests; and a client (remote address) whose password was wrong must
/// wait before its next check, a delay that doubles with each further failure. A request inside
/// that delay sleeps it out (an async sleep, no thread is held, no bcrypt runs); when more than
/// `waiterLimit` of a client's requests already sleep, it is answered 429 at once.
final class Htpasswd: Sendable {
    static let cacheLifetime: TimeInterval = 300
    static let cacheLimit = 1_000
    static let clientLimit = 10_000

    let path: String
    let hooks: RestServerHooks
    let pool: BcryptPool
    let failureDelay: Duration
    let waiterLimit: Int
    private struct Failures {
        var count: Int
        var last: ContinuousClock.Instant
        var until: ContinuousClock.Instant
        var waiting = 0
    }
    private enum Admission {
        case proceed
        case wait(Duration)
        case refuse(Duration)
    }
    private struct State {
        var users: [String: String] = [:]
        var modified: Date?
        var verified: [String: Date] = [:]
        var failures: [String: Failures] = [:]
    }
    private let state = Mutex(State())

    init(path: String, pool: BcryptPool, failureDelay: Duration, waiterLimit: Int = 4,
         hooks: RestServerHooks = RestServerHooks()) throws {
        self.path = path
        self.pool = pool
        self.failureDelay = failureDelay
        self.waiterLimit = waiterLimit
        self.hooks = hooks
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw HTTPFailure(.internalServerError, "cannot read htpasswd file \(path)")
        }
        reloadIfChanged()
    }

    /// Re-reads the file when its modification time changed; an unreadable file keeps the users.
    private func reloadIfChanged() {
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

    /// True when `user` and `password` match an entry; throws 429 while `client` backs off after
    /// a failure, 503 when the bcrypt pool is full.
    func check(user: String, password: String, client: String) async throws -> Bool {
        reloadIfChanged()
        let key = SHA256.hex(Array("\(user)\u{0}\(password)".utf8))
        let now = Date()
        let (hash, cached) = state.withLock { s -> (String?, Bool) in
            if let until = s.verified[key], until > now { return (s.users[user], true) }
            return (s.users[user], false)
        }
        if cached && hash != nil { return true }
        try await waitOutBackOff(client)
        guard let hash, hash.hasPrefix("$2") else {
            failed(client)
            return false
        }
        let hooks = hooks
        let matches = try await pool.run {
            hooks.beforeBcrypt?()
            return Bcrypt.verify(password, hash: hash)
        }
        guard matches else {
            failed(client)
            return false
        }
        state.withLock { s in
            if s.verified.count >= Self.cacheLimit { s.verified = s.verified.filter { $0.value > now } }
            if s.verified.count >= Self.cacheLimit { s.verified = [:] }
            s.verified[key] = now.addingTimeInterval(Self.cacheLifetime)
            s.failures[client] = nil
        }
        return true
    }

    /// Sleeps while `client` backs off after a failure; 429 when too many of its requests do, or
    /// when new failures kept extending the back-off through four sleeps.
    private func waitOutBackOff(_ client: String) async throws {
        for round in 0...4 {
            let now = ContinuousClock.now
            let admission = state.withLock { s -> Admission in
                guard let f = s.failures[client], f.until > now else { return .proceed }
                guard f.waiting < waiterLimit, round < 4 else { return .refuse(f.until - now) }
                s.failures[client]?.waiting += 1
                return .wait(f.until - now)
            }
            switch admission {
            case .proceed:
                return
            case .refuse(let wait):
                let seconds = Int(wait.components.seconds) + 1
                var failure = HTTPFailure(.tooManyRequests, "too many wrong passwords from this address; retry in \(seconds) s")
                failure.headers[.retryAfter] = String(seconds)
                throw failure
            case .wait(let wait):
                defer { state.withLock { s in s.failures[client]?.waiting -= 1 } }
                try await Task.sleep(for: wait)
            }
        }
    }

    /// Counts a failure of `client`: its next check waits `failureDelay` × 2^(failures − 1), at
    /// most 32 times `failureDelay`; failures older than ten minutes are forgotten.
    private func failed(_ client: String) {
        let now = ContinuousClock.now
        state.withLock { s in
            if s.failures.count >= Self.clientLimit { s.failures = s.failures.filter { $0.value.until > now } }
            var count = 1
            if let previous = s.failures[client], now - previous.last < .seconds(600) { count = previous.count + 1 }
            let delay = failureDelay * (1 << min(count - 1, 5))
            s.failures[client] = Failures(count: count, last: now, until: now + delay, waiting: s.failures[client]?.waiting ?? 0)
        }
    }
}

extension RestResponder {
    /// The authenticated user; nil when the server runs without an htpasswd file.
    func authenticate(_ request: Request, client: String) async throws -> String? {
        guard let auth else { return nil }
        guard let header = request.headers[.authorization], header.hasPrefix("Basic "),
              let decoded = Data(base64Encoded: String(header.dropFirst(6))).map({ String(decoding: $0, as: UTF8.self) }),
              let colon = decoded.firstIndex(of: ":") else {
            throw HTTPFailure(.unauthorized, "authentication required")
        }
        let user = String(decoded[..<colon])
        guard try await auth.check(user: user, password: String(decoded[decoded.index(after: colon)...]), client: client) else {
            throw HTTPFailure(.unauthorized, "wrong user name or password")
        }
        return user
    }
}
