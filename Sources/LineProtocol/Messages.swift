import Foundation
import Repository

/// The protocol versions this build speaks, newest last. Version 1 (no per-line MAC) is no
/// longer spoken: a peer that still accepted it could be downgraded by a man in the middle.
public let supportedProtocolVersions = [2]

/// Every message, one JSON object per line with a `type` discriminator. Unknown fields are
/// ignored (so later versions may add some); unknown types get an `unknown_type` error.
public enum Message: Sendable, Equatable {
    case hello(Hello)
    case auth(Auth)
    case welcome(Welcome)
    case backup(BackupRequest)
    case restore(RestoreRequest)
    case status(Simple)
    case ping(Simple)
    case cancel(Cancel)
    case event(Event)
    case result(ResultMessage)
    case error(ErrorMessage)

    public var type: String {
        switch self {
        case .hello: "hello"
        case .auth: "auth"
        case .welcome: "welcome"
        case .backup: "backup"
        case .restore: "restore"
        case .status: "status"
        case .ping: "ping"
        case .cancel: "cancel"
        case .event: "event"
        case .result: "result"
        case .error: "error"
        }
    }

    /// The request id a message carries, if any.
    public var id: String? {
        switch self {
        case .hello, .auth, .welcome: nil
        case .backup(let m): m.id
        case .restore(let m): m.id
        case .status(let m), .ping(let m): m.id
        case .cancel(let m): m.id
        case .event(let m): m.id
        case .result(let m): m.id
        case .error(let m): m.id
        }
    }
}

/// Agent → controller, first line on a connection.
public struct Hello: Codable, Sendable, Equatable {
    public var protocols: [Int]
    public var role: String
    public var agentVersion: String
    public var installationId: String
    public var capabilities: [String]
    /// 32 random bytes, base64: the agent's half of the challenge.
    public var nonce: String

    public init(protocols: [Int], role: String, agentVersion: String, installationId: String, capabilities: [String], nonce: String) {
        self.protocols = protocols
        self.role = role
        self.agentVersion = agentVersion
        self.installationId = installationId
        self.capabilities = capabilities
        self.nonce = nonce
    }
}

/// Controller → agent: the chosen version, the controller's nonce and its proof of the token.
public struct Auth: Codable, Sendable, Equatable {
    public var `protocol`: Int
    public var nonce: String
    public var proof: String

    public init(protocol: Int, nonce: String, proof: String) {
        self.protocol = `protocol`
        self.nonce = nonce
        self.proof = proof
    }
}

/// Agent → controller: the agent's proof of the token. After it, requests may flow.
public struct Welcome: Codable, Sendable, Equatable {
    public var proof: String
    public init(proof: String) { self.proof = proof }
}

/// Where the repository is, and its secrets sealed under the session key.
public struct RepositorySpec: Codable, Sendable, Equatable {
    /// A repository URL without any password in it.
    public var url: String
    public var secrets: SealedSecrets

    public init(url: String, secrets: SealedSecrets) {
        self.url = url
        self.secrets = secrets
    }
}

/// AES-256-GCM under the session key: nonce || ciphertext || tag, base64.
public struct SealedSecrets: Codable, Sendable, Equatable {
    public var box: String
    public init(box: String) { self.box = box }
}

/// What the agent needs to open the repository; never sent in clear.
public struct RepositorySecrets: Codable, Sendable, Equatable {
    public var repositoryPassword: String
    public var restUsername: String?
    public var restPassword: String?
    public var awsAccessKeyId: String?
    public var awsSecretAccessKey: String?
    public var awsRegion: String?
    public var sshKey: String?
    public var sshKnownHosts: String?
    public var sshHostFingerprint: String?
    public var caCertificate: String?

    public init(repositoryPassword: String) { self.repositoryPassword = repositoryPassword }
}

public struct BackupRequest: Codable, Sendable, Equatable {
    public var id: String
    public var repository: RepositorySpec
    /// Parts to back up (by name); nil: everything the agent is configured for.
    public var parts: [String]?
    /// The installation being backed up: a part's parent (whose unchanged files are not read
    /// again) is the newest snapshot of this installation with that part. Nil: of any.
    public var installation: String?

    public init(id: String, repository: RepositorySpec, parts: [String]? = nil, installation: String? = nil) {
        self.id = id
        self.repository = repository
        self.parts = parts
        self.installation = installation
    }
}

public struct RestoreRequest: Codable, Sendable, Equatable {
    public var id: String
    public var repository: RepositorySpec
    /// The full snapshot id.
    public var snapshot: String
    /// Parts to restore; nil: every part of the snapshot that belongs to this agent's role.
    public var parts: [String]?
    /// Keep files in restored directories that the snapshot does not hold.
    public var keepExtraneous: Bool?
    /// Text to replace in the restored database rows (restoring into another namespace or domain).
    public var rewrite: [Rewrite]?

    public init(id: String, repository: RepositorySpec, snapshot: String, parts: [String]? = nil, keepExtraneous: Bool? = nil,
                rewrite: [Rewrite]? = nil) {
        self.id = id
        self.repository = repository
        self.snapshot = snapshot
        self.parts = parts
        self.keepExtraneous = keepExtraneous
        self.rewrite = rewrite
    }
}

/// One text replacement: every occurrence of `from` becomes `to`. Both are host names or
/// `<namespace>.svc` (what moves with an installation); anything else is refused before use.
public struct Rewrite: Codable, Sendable, Equatable {
    public var from: String
    public var to: String
    public init(from: String, to: String) {
        self.from = from
        self.to = to
    }

    /// Why this rewrite must not run, or nil when both values are DNS names.
    public var problem: String? {
        for value in [from, to] where !Self.isDNSName(value) {
            return "rewrite value \"\(value.prefix(80))\" is not a host name or namespace (DNS labels of letters, digits and '-', joined by '.')"
        }
        return nil
    }

    /// A DNS name: 1 to 253 characters, labels of 1 to 63 letters, digits and `-` (not at
    /// either end), separated by dots.
    public static func isDNSName(_ text: String) -> Bool {
        guard !text.isEmpty, text.utf8.count <= 253 else { return false }
        return text.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            label.utf8.count >= 1 && label.utf8.count <= 63 && label.first != "-" && label.last != "-"
                && label.utf8.allSatisfy { c in (c >= 0x61 && c <= 0x7A) || (c >= 0x41 && c <= 0x5A) || (c >= 0x30 && c <= 0x39) || c == 0x2D }
        }
    }
}

public struct Simple: Codable, Sendable, Equatable {
    public var id: String
    public init(id: String) { self.id = id }
}

public struct Cancel: Codable, Sendable, Equatable {
    public var id: String
    /// The id of the request to cancel.
    public var target: String
    public init(id: String, target: String) {
        self.id = id
        self.target = target
    }
}

/// Agent → controller while a request runs.
public struct Event: Codable, Sendable, Equatable {
    public var id: String
    public var stage: String
    public var bytes: Int64
    public var items: Int64
    public var totalBytes: Int64?

    public init(id: String, stage: String, bytes: Int64, items: Int64, totalBytes: Int64? = nil) {
        self.id = id
        self.stage = stage
        self.bytes = bytes
        self.items = items
        self.totalBytes = totalBytes
    }
}

/// The final answer to a request.
public struct ResultMessage: Codable, Sendable, Equatable {
    public var id: String
    /// backup: the parts stored (their roots and statistics); the controller writes the snapshot.
    public var parts: [Part]?
    /// restore: the parts restored.
    public var restored: [String]?
    /// status: "idle" or "busy"; with the running request's id.
    public var state: String?
    public var running: String?

    public init(id: String, parts: [Part]? = nil, restored: [String]? = nil, state: String? = nil, running: String? = nil) {
        self.id = id
        self.parts = parts
        self.restored = restored
        self.state = state
        self.running = running
    }

    public static func == (a: ResultMessage, b: ResultMessage) -> Bool {
        a.id == b.id && a.restored == b.restored && a.state == b.state && a.running == b.running
            && a.parts?.map(\.name) == b.parts?.map(\.name)
    }
}

/// A failure: a stable code for programs, a one-line message for people. `id` is absent when
/// the failure is not about a request (a malformed line, a failed handshake).
public struct ErrorMessage: Codable, Sendable, Equatable, Error {
    public var id: String?
    public var code: String
    public var message: String

    public init(id: String? = nil, code: ErrorCode, message: String) {
        self.id = id
        self.code = code.rawValue
        self.message = Self.oneLine(message)
    }

    /// The message as one line whatever it quotes (values the peer sent may hold newlines):
    /// control characters are shown escaped (`\n`, `\r`, `\t`, `\u{1b}`).
    public static func oneLine(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else { return text }
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F: out += "\\u{\(String(scalar.value, radix: 16))}"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}

/// The stable error codes (protocol.md lists them). New codes may be added; clients treat an
/// unknown code as a failure of the request it names.
public enum ErrorCode: String, Sendable, CaseIterable {
    case badJSON = "bad_json"
    case lineTooLong = "line_too_long"
    case unknownType = "unknown_type"
    case invalidRequest = "invalid_request"
    case unsupportedVersion = "unsupported_version"
    case unauthorized
    case outOfOrder = "out_of_order"
    /// A line after `welcome` failed its integrity check: the connection is closed.
    case tampered
    case busy
    case unknownRequest = "unknown_request"
    case cancelled
    case repository
    case sourceFailed = "source_failed"
    case toolFailed = "tool_failed"
    case restoreFailed = "restore_failed"
    case internalError = "internal"
}
