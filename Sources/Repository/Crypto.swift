import COpenSSL
import CKDF
import Foundation

/// A 256-bit secret key. Its bytes never appear in descriptions.
public struct SecretKey: Sendable, CustomStringConvertible {
    let bytes: [UInt8]

    init?(_ data: Data) {
        guard data.count == 32 else { return nil }
        bytes = [UInt8](data)
    }

    static func random() -> SecretKey { SecretKey(Crypto.random(32))! }

    var data: Data { Data(bytes) }
    public var description: String { "SecretKey(redacted)" }
}

/// The primitives, over OpenSSL. Sealed form: nonce (12) || ciphertext || tag (16).
public enum Crypto {
    public static let nonceSize = 12
    public static let tagSize = 16
    public static let overhead = nonceSize + tagSize

    public static func random(_ count: Int) -> Data {
        var data = Data(count: count)
        let ok = data.withUnsafeMutableBytes { chb_random($0.baseAddress, count) }
        precondition(ok == 1, "the system random generator failed")
        return data
    }

    public static func sha256(_ data: Data) -> Digest32 {
        data.withUnsafeBytes { sha256($0) }
    }

    public static func sha256(_ bytes: UnsafeRawBufferPointer) -> Digest32 {
        var out = [UInt8](repeating: 0, count: 32)
        _ = chb_sha256(bytes.baseAddress, bytes.count, &out)
        return out.withUnsafeBytes { Digest32(bytes: $0) }
    }

    static func hmac(_ key: SecretKey, _ bytes: UnsafeRawBufferPointer) -> Digest32 {
        var out = [UInt8](repeating: 0, count: 32)
        _ = key.bytes.withUnsafeBytes { k in chb_hmac_sha256(k.baseAddress, 32, bytes.baseAddress, bytes.count, &out) }
        return out.withUnsafeBytes { Digest32(bytes: $0) }
    }

    static func hmac(_ key: SecretKey, _ data: Data) -> Digest32 {
        data.withUnsafeBytes { hmac(key, $0) }
    }

    /// Encrypts with a fresh random nonce; `aad` is authenticated, not stored.
    static func seal(_ key: SecretKey, _ plaintext: UnsafeRawBufferPointer, aad: Data = Data()) -> Data {
        var out = Data(count: overhead + plaintext.count)
        out.withUnsafeMutableBytes { raw in
            let base = raw.baseAddress!
            precondition(chb_random(base, nonceSize) == 1, "the system random generator failed")
            let ok = key.bytes.withUnsafeBytes { k in
                aad.withUnsafeBytes { a in
                    chb_aes256gcm_seal(k.baseAddress, base, a.baseAddress, a.count, plaintext.baseAddress,
                                       plaintext.count, base + nonceSize, base + nonceSize + plaintext.count)
                }
            }
            precondition(ok == 1, "AES-256-GCM encryption failed")
        }
        return out
    }

    static func seal(_ key: SecretKey, _ plaintext: Data, aad: Data = Data()) -> Data {
        plaintext.withUnsafeBytes { seal(key, $0, aad: aad) }
    }

    /// Seals `bodyLength` bytes that start `nonceSize` bytes into `buffer`, in place: writes a
    /// random nonce before them and the tag after them.
    static func sealInPlace(_ key: SecretKey, _ buffer: UnsafeMutableRawPointer, bodyLength: Int, aad: Data) {
        precondition(chb_random(buffer, nonceSize) == 1, "the system random generator failed")
        let body = buffer + nonceSize
        let ok = key.bytes.withUnsafeBytes { k in
            aad.withUnsafeBytes { a in
                chb_aes256gcm_seal(k.baseAddress, buffer, a.baseAddress, a.count, body, bodyLength, body, body + bodyLength)
            }
        }
        precondition(ok == 1, "AES-256-GCM encryption failed")
    }

    /// Decrypts and verifies; nil when the data or `aad` was changed or the key is wrong.
    static func open(_ key: SecretKey, _ sealed: UnsafeRawBufferPointer, aad: Data = Data()) -> Data? {
        guard sealed.count >= overhead else { return nil }
        var out = Data(count: sealed.count - overhead)
        let ok = out.withUnsafeMutableBytes { open(key, sealed, aad: aad, into: $0.baseAddress) }
        return ok ? out : nil
    }

    /// Decrypts into `out` (room for `sealed.count - overhead` bytes); false when authentication fails.
    static func open(_ key: SecretKey, _ sealed: UnsafeRawBufferPointer, aad: Data, into out: UnsafeMutableRawPointer?) -> Bool {
        guard sealed.count >= overhead else { return false }
        let length = sealed.count - overhead
        let ok = key.bytes.withUnsafeBytes { k in
            aad.withUnsafeBytes { a in
                let base = sealed.baseAddress!
                return chb_aes256gcm_open(k.baseAddress, base, a.baseAddress, a.count, base + nonceSize, length,
                                          base + nonceSize + length, out)
            }
        }
        return ok == 1
    }

    static func open(_ key: SecretKey, _ sealed: Data, aad: Data = Data()) -> Data? {
        sealed.withUnsafeBytes { open(key, $0, aad: aad) }
    }

    /// scrypt (RFC 7914): PBKDF2-HMAC-SHA256 through OpenSSL, then the p lanes of scryptROMix on
    /// up to `threads` threads at once (`chb_scrypt_romix_lanes`), then PBKDF2 again. OpenSSL's
    /// EVP_PBE_scrypt computes the same bytes but runs the lanes one after the other: with the
    /// default p = 4 on two cores this takes half the time in the same memory (128·r·N bytes),
    /// and every command opens a key first.
    static func scrypt(password: String, salt: Data, n: UInt64, r: UInt64, p: UInt64, length: Int,
                       threads: Int = ProcessInfo.processInfo.activeProcessorCount) -> Data? {
        // r and p size the lanes below; N, and the thread count, are checked by chb_scrypt_romix_lanes.
        guard (1...1024).contains(r), (1...64).contains(p), length > 0 else { return nil }
        let pw = Array(password.utf8)
        var blocks = [UInt8](repeating: 0, count: Int(p * 128 * r))
        defer { blocks.withUnsafeMutableBytes { OPENSSL_cleanse($0.baseAddress, $0.count) } }
        let expanded = blocks.withUnsafeMutableBytes { b in
            salt.withUnsafeBytes { s in chb_pbkdf2_sha256(pw, pw.count, s.baseAddress, s.count, 1, b.baseAddress, b.count) }
        }
        guard expanded == 1, blocks.withUnsafeMutableBufferPointer({
            chb_scrypt_romix_lanes($0.baseAddress, UInt32(r), n, UInt32(p), UInt32(clamping: threads))
        }) == 0 else { return nil }
        var out = Data(count: length)
        let ok = out.withUnsafeMutableBytes { o in
            blocks.withUnsafeBytes { b in chb_pbkdf2_sha256(pw, pw.count, b.baseAddress, b.count, 1, o.baseAddress, length) }
        }
        return ok == 1 ? out : nil
    }

    /// `scrypt` on a thread of its own, for async callers: it holds its thread for 70-90 ms at
    /// the default parameters (seconds at high ones), too long for one of the few threads (one
    /// a core) that run every task of the process, whose other work (a controller's watches, an
    /// agent's handshakes) would wait behind it.
    static func scrypt(password: String, salt: Data, n: UInt64, r: UInt64, p: UInt64, length: Int) async -> Data? {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(returning: scrypt(password: password, salt: salt, n: n, r: r, p: p, length: length,
                                                      threads: ProcessInfo.processInfo.activeProcessorCount))
            }
        }
    }
}

/// SHA-256 over bytes that arrive in pieces (a pack as it streams in).
final class SHA256Stream {
    private let context: UnsafeMutableRawPointer

    init() {
        guard let c = chb_sha256_new() else { preconditionFailure("OpenSSL could not create a SHA-256 context") }
        context = c
    }

    deinit { chb_sha256_free(context) }

    func update(_ bytes: UnsafeRawBufferPointer) {
        if bytes.count > 0 { _ = chb_sha256_update(context, bytes.baseAddress, bytes.count) }
    }

    func finish() -> Digest32 {
        var out = [UInt8](repeating: 0, count: 32)
        _ = chb_sha256_final(context, &out)
        return out.withUnsafeBytes { Digest32(bytes: $0) }
    }
}

/// General-purpose primitives for other modules (the control protocol's handshake), over the
/// same OpenSSL calls. Keys are raw bytes here; they never appear in errors.
public enum Primitives {
    public static func random(_ count: Int) -> Data { Crypto.random(count) }

    public static func hmacSHA256(key: Data, _ data: Data) -> Data {
        var out = [UInt8](repeating: 0, count: 32)
        _ = key.withUnsafeBytes { k in data.withUnsafeBytes { d in chb_hmac_sha256(k.baseAddress, k.count, d.baseAddress, d.count, &out) } }
        return Data(out)
    }

    /// AES-256-GCM with a random nonce: nonce || ciphertext || tag.
    public static func seal(key: Data, _ plaintext: Data, aad: Data) -> Data? {
        guard let k = SecretKey(key) else { return nil }
        return Crypto.seal(k, plaintext, aad: aad)
    }

    public static func open(key: Data, _ sealed: Data, aad: Data) -> Data? {
        guard let k = SecretKey(key) else { return nil }
        return Crypto.open(k, sealed, aad: aad)
    }

    /// Compares without an early exit, so timing tells nothing about where two secrets differ.
    public static func constantTimeEqual(_ a: Data, _ b: Data) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for (x, y) in zip(a, b) { diff |= x ^ y }
        return diff == 0
    }
}
