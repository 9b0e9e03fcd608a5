import Foundation
import Repository
import Storage

/// The shared token both ends prove they hold, and what the handshake derives from it
/// (protocol.md, "Handshake and authentication"). With `H = SHA-256(hello line)` and `v` the
/// chosen version as 4 big-endian bytes:
///
///     controllerProof = HMAC-SHA256(token, "chebackup-controller-v2" | Na | Nc | H | v)
///     agentProof      = HMAC-SHA256(token, "chebackup-agent-v2"      | Na | Nc | H | v)
///     sealing key     = HMAC-SHA256(token, "chebackup-session-v2"    | Na | Nc)
///     line keys       = HMAC-SHA256(token, "chebackup-mac-controller-v2" | Na | Nc), and "…-mac-agent-v2"
///
/// Fresh nonces from both sides make every proof and key unique to one connection; the token
/// never crosses the wire. The proofs cover the hello line and the version, so a changed hello
/// (a downgrade, another role) fails authentication. After `welcome` every line is an envelope
/// MACed under its direction's key over a sequence number ([`LineSealer`], [`LineOpener`]).
public struct SharedToken: Sendable {
    let bytes: Data

    /// The least entropy a token must carry (32 random bytes, as the installer makes).
    public static let minimumBits = 256

    public init(_ bytes: Data) throws {
        let trimmed = Data(String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines).utf8)
        let bits = Self.estimatedBits(trimmed)
        guard bits >= Self.minimumBits else {
            throw ErrorMessage(code: .unauthorized, message: "the shared token is too weak: about \(bits) bits of entropy, at least \(Self.minimumBits) are needed (32 random bytes, e.g. `openssl rand -hex 32`)")
        }
        self.bytes = trimmed
    }

    /// A generous estimate of a token's entropy: its length times the bits a character of the
    /// alphabet it uses can carry (hexadecimal: 4; otherwise from the character classes present).
    /// A token of fewer than 8 distinct characters counts as nothing: it is not random.
    public static func estimatedBits(_ token: Data) -> Int {
        guard Set(token).count >= 8 else { return 0 }
        func all(_ p: (UInt8) -> Bool) -> Bool { token.allSatisfy(p) }
        let digit = { (c: UInt8) in c >= 0x30 && c <= 0x39 }
        let lower = { (c: UInt8) in c >= 0x61 && c <= 0x7A }
        let upper = { (c: UInt8) in c >= 0x41 && c <= 0x5A }
        if all({ digit($0) || ($0 >= 0x61 && $0 <= 0x66) }) || all({ digit($0) || ($0 >= 0x41 && $0 <= 0x46) }) {
            return token.count * 4
        }
        var alphabet = 0
        if token.contains(where: digit) { alphabet += 10 }
        if token.contains(where: lower) { alphabet += 26 }
        if token.contains(where: upper) { alphabet += 26 }
        if token.contains(where: { !digit($0) && !lower($0) && !upper($0) }) { alphabet += 33 }
        return Int(Double(token.count) * log2(Double(alphabet)))
    }

    public static func load(file: String) throws -> SharedToken {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw ErrorMessage(code: .unauthorized, message: "cannot read the token file \(file)")
        }
        return try SharedToken(data)
    }

    /// A warning when others can read the token file: world-readable, or group-readable by a
    /// group this process is not in (a Kubernetes Secret mounted with `fsGroup` is readable by
    /// the pod's own group, which is fine). Nil when only we can read it.
    public static func permissionWarning(file: String) -> String? {
        var st = stat()
        guard stat(file, &st) == 0 else { return nil }
        let mode = st.st_mode & 0o777
        if mode & 0o004 != 0 {
            return "the token file \(file) is readable by every user (mode \(String(mode, radix: 8))): make it 0600 or 0400"
        }
        if mode & 0o040 != 0 && !Self.processGroups().contains(st.st_gid) {
            return "the token file \(file) is readable by group \(st.st_gid), which this process is not in (mode \(String(mode, radix: 8))): make it 0600 or 0400"
        }
        return nil
    }

    static func processGroups() -> Set<gid_t> {
        var groups = [gid_t](repeating: 0, count: 256)
        let n = getgroups(Int32(groups.count), &groups)
        return Set(groups.prefix(Int(max(n, 0)))).union([getgid(), getegid()])
    }

    func mac(_ label: String, _ parts: Data...) -> Data {
        Primitives.hmacSHA256(key: bytes, parts.reduce(Data(label.utf8), +))
    }

    /// What the proofs cover besides the nonces: the hello line (without its newline) and the version.
    static func transcript(hello: Data, version: Int) -> Data {
        var v = UInt32(truncatingIfNeeded: version).bigEndian
        return Crypto.sha256(hello).data + Data(bytes: &v, count: 4)
    }

    public func controllerProof(agentNonce: Data, controllerNonce: Data, hello: Data, version: Int) -> Data {
        mac("chebackup-controller-v2", agentNonce, controllerNonce, Self.transcript(hello: hello, version: version))
    }

    public func agentProof(agentNonce: Data, controllerNonce: Data, hello: Data, version: Int) -> Data {
        mac("chebackup-agent-v2", agentNonce, controllerNonce, Self.transcript(hello: hello, version: version))
    }

    public func sessionKeys(agentNonce: Data, controllerNonce: Data) -> SessionKeys {
        SessionKeys(sealing: SessionKey(bytes: mac("chebackup-session-v2", agentNonce, controllerNonce)),
                    controllerLines: mac("chebackup-mac-controller-v2", agentNonce, controllerNonce),
                    agentLines: mac("chebackup-mac-agent-v2", agentNonce, controllerNonce))
    }

    public static func newNonce() -> Data { Primitives.random(32) }
}

/// The keys of one authenticated connection: one seals secrets, one MACs each direction's lines.
public struct SessionKeys: Sendable {
    public let sealing: SessionKey
    let controllerLines: Data
    let agentLines: Data

    /// For the controller's side: it seals what it sends with its key and opens the agent's.
    public var controllerSide: (sealer: LineSealer, opener: LineOpener) {
        (LineSealer(key: controllerLines), LineOpener(key: agentLines, peer: "agent"))
    }

    /// For the agent's side.
    public var agentSide: (sealer: LineSealer, opener: LineOpener) {
        (LineSealer(key: agentLines), LineOpener(key: controllerLines, peer: "controller"))
    }
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
    /// libcurl wants files, so those are written (mode 0600, created new) into `directory`, a
    /// private directory made for this use: nobody else can plant or read them there.
    public func backendCredentials(filesIn directory: PrivateDirectory) throws -> BackendCredentials {
        var c = BackendCredentials()
        c.restUsername = restUsername
        c.restPassword = restPassword
        c.awsAccessKeyID = awsAccessKeyId
        c.awsSecretAccessKey = awsSecretAccessKey
        if let awsRegion { c.awsRegion = awsRegion }
        c.sshKey = sshKey
        c.sshHostFingerprint = sshHostFingerprint
        func write(_ text: String, _ name: String) throws -> String {
            let path = directory.path + "/" + name
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else {
                throw ErrorMessage(code: .internalError, message: "cannot create \(path): \(String(cString: strerror(errno)))")
            }
            let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
            do { try handle.write(contentsOf: Data(text.utf8)) } catch {
                throw ErrorMessage(code: .internalError, message: "cannot write \(path): \(error)")
            }
            return path
        }
        if let sshKnownHosts { c.sshKnownHosts = try write(sshKnownHosts, "known_hosts") }
        if let caCertificate { c.caFile = try write(caCertificate, "ca.pem") }
        return c
    }
}
