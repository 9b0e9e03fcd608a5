import Foundation
import Repository
import Storage

/// The shared token both ends prove they hold, and what the handshake derives from it:
///
///     controllerProof = HMAC-SHA256(token, "chebackup-controller-v1" | agentNonce | controllerNonce)
///     agentProof      = HMAC-SHA256(token, "chebackup-agent-v1"      | agentNonce | controllerNonce)
///     sessionKey      = HMAC-SHA256(token, "chebackup-session-v1"    | agentNonce | controllerNonce)
///
/// Fresh nonces from both sides make every proof and session key unique to one connection; the
/// token never crosses the wire. Secrets (repository password, backend credentials) travel sealed
/// with AES-256-GCM under the session key, with the request id as associated data.
public struct SharedToken: Sendable {
    let bytes: Data

    public init(_ bytes: Data) throws {
        let trimmed = Data(String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines).utf8)
        guard trimmed.count >= 16 else {
            throw ErrorMessage(code: .unauthorized, message: "the shared token must be at least 16 characters")
        }
        self.bytes = trimmed
    }

    public static func load(file: String) throws -> SharedToken {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw ErrorMessage(code: .unauthorized, message: "cannot read the token file \(file)")
        }
        return try SharedToken(data)
    }

    func mac(_ label: String, _ agentNonce: Data, _ controllerNonce: Data) -> Data {
        Primitives.hmacSHA256(key: bytes, Data(label.utf8) + agentNonce + controllerNonce)
    }

    public func controllerProof(agentNonce: Data, controllerNonce: Data) -> Data {
        mac("chebackup-controller-v1", agentNonce, controllerNonce)
    }

    public func agentProof(agentNonce: Data, controllerNonce: Data) -> Data {
        mac("chebackup-agent-v1", agentNonce, controllerNonce)
    }

    public func sessionKey(agentNonce: Data, controllerNonce: Data) -> SessionKey {
        SessionKey(bytes: mac("chebackup-session-v1", agentNonce, controllerNonce))
    }

    public static func newNonce() -> Data { Primitives.random(32) }
}

/// The key that seals secrets on one authenticated connection.
public struct SessionKey: Sendable {
    let bytes: Data

    public func seal(_ secrets: RepositorySecrets, requestID: String) -> SealedSecrets {
        let plain = (try? JSONEncoder().encode(secrets)) ?? Data()
        let sealed = Primitives.seal(key: bytes, plain, aad: Data("secrets:\(requestID)".utf8)) ?? Data()
        return SealedSecrets(box: sealed.base64EncodedString())
    }

    public func open(_ sealed: SealedSecrets, requestID: String) throws -> RepositorySecrets {
        guard let data = Data(base64Encoded: sealed.box),
              let plain = Primitives.open(key: bytes, data, aad: Data("secrets:\(requestID)".utf8)),
              let secrets = try? JSONDecoder().decode(RepositorySecrets.self, from: plain) else {
            throw ErrorMessage(id: requestID, code: .invalidRequest, message: "the sealed secrets do not open with this session's key")
        }
        return secrets
    }
}

/// Picks the newest version both sides speak.
public func negotiateVersion(offered: [Int]) -> Int? {
    Set(offered).intersection(supportedProtocolVersions).max()
}

extension RepositorySecrets {
    /// The credentials for opening the backend. Known hosts and a CA certificate travel as text;
    /// libcurl wants files, so those are written (mode 0600) into `directory`.
    public func backendCredentials(filesIn directory: String) throws -> BackendCredentials {
        var c = BackendCredentials()
        c.restUsername = restUsername
        c.restPassword = restPassword
        c.awsAccessKeyID = awsAccessKeyId
        c.awsSecretAccessKey = awsSecretAccessKey
        if let awsRegion { c.awsRegion = awsRegion }
        c.sshKey = sshKey
        c.sshHostFingerprint = sshHostFingerprint
        func write(_ text: String, _ name: String) throws -> String {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let path = directory + "/" + name
            guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) else {
                throw ErrorMessage(code: .internalError, message: "cannot write \(path)")
            }
            return path
        }
        if let sshKnownHosts { c.sshKnownHosts = try write(sshKnownHosts, "known_hosts") }
        if let caCertificate { c.caFile = try write(caCertificate, "ca.pem") }
        return c
    }
}
