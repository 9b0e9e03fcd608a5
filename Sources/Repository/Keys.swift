import Foundation
import Storage

/// The repository's master keys: one encrypts every object, one computes chunk ids and derives the
/// chunker's gear table. They are random, and stored only wrapped under password-derived keys.
struct MasterKeys: Codable, Sendable {
    let encryption: SecretKey
    let chunkID: SecretKey

    static func generate() -> MasterKeys {
        MasterKeys(encryption: .random(), chunkID: .random())
    }

    enum CodingKeys: String, CodingKey { case encryption, chunkID = "chunkId" }

    init(encryption: SecretKey, chunkID: SecretKey) {
        self.encryption = encryption
        self.chunkID = chunkID
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        guard let e = SecretKey(try c.decode(Data.self, forKey: .encryption)),
              let i = SecretKey(try c.decode(Data.self, forKey: .chunkID)) else {
            throw DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: "master key of wrong size"))
        }
        encryption = e
        chunkID = i
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(encryption.data, forKey: .encryption)
        try c.encode(chunkID.data, forKey: .chunkID)
    }
}

/// scrypt parameters; stored in each key file so they can be raised later. The default, N = 2^14,
/// r = 8, p = 4, costs an attacker as much as N = 2^15, p = 1 (scrypt's cost grows with N²·r·p)
/// and needs 16 MiB while it runs; the four lanes are independent, so on two cores
/// `Crypto.scrypt` runs two at a time in the same 16 MiB (each keeps half its table and
/// recomputes the rest) and opens a key in about 0.08 s instead of the 0.15-0.2 s OpenSSL's
/// one-lane-at-a-time scrypt takes.
public struct KDFParameters: Codable, Sendable, Hashable {
    public var n: UInt64
    public var r: UInt64
    public var p: UInt64

    public init(n: UInt64 = 1 << 14, r: UInt64 = 8, p: UInt64 = 4) {
        self.n = n
        self.r = r
        self.p = p
    }

    public static let `default` = KDFParameters()

    /// The bounds every reader accepts; nothing outside them is ever written.
    public var isPlausible: Bool {
        n >= 2 && n.nonzeroBitCount == 1 && n <= 1 << 22 && r >= 1 && r <= 64 && p >= 1 && p <= 16
    }
}

/// A key file (`keys/<sha256>`): plaintext JSON, since it is read before anything is unlocked.
struct KeyFile: Codable {
    var format = "chebackup-key"
    var version = 1
    var created: Date
    var hostname: String
    var username: String
    var kdf: String = "scrypt"
    var kdfParameters: KDFParameters
    var salt: Data
    /// The master keys, sealed in an envelope under the scrypt-derived key.
    var data: Data

    static func make(password: String, keys: MasterKeys, parameters: KDFParameters) async throws -> KeyFile {
        guard parameters.isPlausible else {
            throw RepositoryError(.invalidArgument, "scrypt parameters N=\(parameters.n) r=\(parameters.r) p=\(parameters.p) are out of range (N a power of two up to 2^22, r 1-64, p 1-16)")
        }
        let salt = Crypto.random(32)
        guard let derived = await Crypto.scrypt(password: password, salt: salt, n: parameters.n, r: parameters.r,
                                                p: parameters.p, length: 32).flatMap(SecretKey.init) else {
            throw RepositoryError(.invalidArgument, "scrypt failed with N=\(parameters.n) r=\(parameters.r) p=\(parameters.p)")
        }
        let sealed = Envelope.seal(JSON.encode(keys), kind: .masterKey, key: derived, compress: false)
        return KeyFile(created: Date(), hostname: ProcessInfo.processInfo.hostName,
                       username: ProcessInfo.processInfo.environment["USER"] ?? "", kdfParameters: parameters,
                       salt: salt, data: sealed)
    }

    /// The master keys, or nil when the password does not open this key file.
    func unlock(password: String, what: String) async throws -> MasterKeys? {
        guard format == "chebackup-key" else { throw RepositoryError(.corrupted, "\(what) is not a che-backup key file") }
        guard version == 1, kdf == "scrypt" else {
            throw RepositoryError(.unsupported, "\(what) uses key format \(version) / \(kdf), which this program cannot read")
        }
        let p = kdfParameters
        guard p.isPlausible else {
            throw RepositoryError(.corrupted, "\(what) has implausible scrypt parameters")
        }
        guard let derived = await Crypto.scrypt(password: password, salt: salt, n: p.n, r: p.r, p: p.p, length: 32)
            .flatMap(SecretKey.init) else {
            throw RepositoryError(.corrupted, "\(what): scrypt failed")
        }
        do {
            let plain = try Envelope.open(data, kind: .masterKey, key: derived, what: what)
            return try JSON.decode(MasterKeys.self, plain, what: what)
        } catch let error as RepositoryError where error.code == .corrupted {
            return nil
        }
    }
}
