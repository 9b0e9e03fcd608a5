/// Webhook serving certificates made and inspected with the OpenSSL 3 C library.
///
/// `CertificateAuthority.issue` creates a throwaway self-signed CA and a server certificate it
/// signs (ECDSA P-256 keys, SHA-256 signatures), all PEM encoded. `CertificateInfo` parses a PEM
/// certificate and checks chains and key pairs. Every OpenSSL object is created and freed inside
/// this file, on every path; only Strings, Dates and Bools cross its boundary.
import COpenSSL
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A failure, with OpenSSL's error-queue text appended when OpenSSL reported one. Always one line.
public struct CertificateError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }

    public init(message: String) {
        self.message = message.split(whereSeparator: \.isNewline).joined(separator: " ")
    }

    /// `context`, followed by (and draining) OpenSSL's thread-local error queue.
    fileprivate static func openSSL(_ context: String) -> CertificateError {
        var details: [String] = []
        while case let code = ERR_get_error(), code != 0 {
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
            details.append(String(decoding: bytes, as: UTF8.self))
        }
        return CertificateError(message: details.isEmpty ? context : "\(context): \(details.joined(separator: "; "))")
    }
}

/// A CA and a server certificate it signed, PEM encoded (the key is PKCS#8 PEM, EC P-256).
public struct ServingCertificate: Sendable, Equatable {
    public var caCertificatePEM: String
    public var certificatePEM: String
    public var privateKeyPEM: String

    public init(caCertificatePEM: String, certificatePEM: String, privateKeyPEM: String) {
        self.caCertificatePEM = caCertificatePEM
        self.certificatePEM = certificatePEM
        self.privateKeyPEM = privateKeyPEM
    }
}

public enum CertificateAuthority {
    /// A new self-signed CA (CN "<commonName> CA", basicConstraints critical CA:TRUE, keyUsage keyCertSign+cRLSign)
    /// and a server certificate signed by it: CN commonName, subjectAltName DNS:each dnsName, basicConstraints CA:FALSE,
    /// keyUsage digitalSignature+keyEncipherment, extendedKeyUsage serverAuth, random 128-bit positive serial,
    /// notBefore = now - 5 minutes, notAfter = now + validity. ECDSA P-256 keys, SHA-256 signatures.
    /// Both certificates share the validity window and carry key identifiers (SKI; AKI on the server).
    /// Throws when `dnsNames` is empty or holds a name that is not printable ASCII without spaces,
    /// when `validity` is not positive, or when OpenSSL fails.
    public static func issue(commonName: String, dnsNames: [String], validity: TimeInterval,
                             now: Date = Date()) throws -> ServingCertificate {
        ERR_clear_error()
        guard !dnsNames.isEmpty else { throw CertificateError(message: "a serving certificate needs at least one DNS name") }
        for name in dnsNames {
            guard !name.isEmpty, name.utf8.count <= 253, name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
                throw CertificateError(message: "invalid DNS name \(name.debugDescription)")
            }
        }
        guard validity.isFinite, validity > 0 else { throw CertificateError(message: "validity must be positive, got \(validity)") }
        let window = Window(notBefore: try unixTime(now.addingTimeInterval(-300)),
                            notAfter: try unixTime(now.addingTimeInterval(validity)))

        let caKey = try generateP256Key()
        defer { EVP_PKEY_free(caKey) }
        let ca = try makeCertificate(commonName: "\(commonName) CA", subjectKey: caKey, issuer: nil, issuerKey: caKey,
                                     window: window, dnsNames: [], extensions: [
                                         (NID_basic_constraints, "critical,CA:TRUE"),
                                         (NID_key_usage, "critical,keyCertSign,cRLSign"),
                                         (NID_subject_key_identifier, "hash"),
                                     ])
        defer { X509_free(ca) }

        let serverKey = try generateP256Key()
        defer { EVP_PKEY_free(serverKey) }
        let server = try makeCertificate(commonName: commonName, subjectKey: serverKey, issuer: ca, issuerKey: caKey,
                                         window: window, dnsNames: dnsNames, extensions: [
                                             (NID_basic_constraints, "critical,CA:FALSE"),
                                             (NID_key_usage, "critical,digitalSignature,keyEncipherment"),
                                             (NID_ext_key_usage, "serverAuth"),
                                             (NID_subject_key_identifier, "hash"),
                                             (NID_authority_key_identifier, "keyid:always"),
                                         ])
        defer { X509_free(server) }

        return ServingCertificate(
            caCertificatePEM: try writePEM("CA certificate") { PEM_write_bio_X509($0, ca) },
            certificatePEM: try writePEM("certificate") { PEM_write_bio_X509($0, server) },
            privateKeyPEM: try writePEM("private key") { PEM_write_bio_PrivateKey($0, serverKey, nil, nil, 0, nil, nil) })
    }

    private struct Window {
        var notBefore: time_t
        var notAfter: time_t
    }

    /// Seconds since 1970 for `date`, if X.509 can express it (years 1970 through 9999).
    private static func unixTime(_ date: Date) throws -> time_t {
        let seconds = date.timeIntervalSince1970.rounded(.down)
        guard seconds.isFinite, seconds >= 0, seconds <= 253_402_300_799 else {
            throw CertificateError(message: "certificate time \(date) is outside 1970...9999")
        }
        return time_t(seconds)
    }

    private static func generateP256Key() throws -> OpaquePointer {
        guard let ctx = EVP_PKEY_CTX_new_from_name(nil, "EC", nil) else {
            throw CertificateError.openSSL("EVP_PKEY_CTX_new_from_name(EC) failed")
        }
        defer { EVP_PKEY_CTX_free(ctx) }
        var key: OpaquePointer?
        guard EVP_PKEY_keygen_init(ctx) == 1, EVP_PKEY_CTX_set_group_name(ctx, "P-256") == 1,
              EVP_PKEY_keygen(ctx, &key) == 1, let key else {
            EVP_PKEY_free(key)
            throw CertificateError.openSSL("P-256 key generation failed")
        }
        return key
    }

    /// A signed X.509 v3 certificate (caller frees). `issuer` nil means self-signed.
    private static func makeCertificate(commonName: String, subjectKey: OpaquePointer, issuer: OpaquePointer?,
                                        issuerKey: OpaquePointer, window: Window, dnsNames: [String],
                                        extensions: [(nid: Int32, value: String)]) throws -> OpaquePointer {
        guard let cert = X509_new() else { throw CertificateError.openSSL("X509_new failed") }
        do {
            guard X509_set_version(cert, 2) == 1 else { throw CertificateError.openSSL("X509_set_version failed") }
            try setRandomSerial(cert)
            try setTime(cert, window.notBefore, notAfter: false)
            try setTime(cert, window.notAfter, notAfter: true)

            guard let name = X509_NAME_new() else { throw CertificateError.openSSL("X509_NAME_new failed") }
            defer { X509_NAME_free(name) }
            let cn = Array(commonName.utf8)
            guard X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8, cn, Int32(cn.count), -1, 0) == 1 else {
                throw CertificateError.openSSL("invalid common name \(commonName.debugDescription)")
            }
            guard X509_set_subject_name(cert, name) == 1,
                  X509_set_issuer_name(cert, issuer.flatMap { X509_get_subject_name($0) } ?? name) == 1 else {
                throw CertificateError.openSSL("setting the certificate names failed")
            }
            guard X509_set_pubkey(cert, subjectKey) == 1 else { throw CertificateError.openSSL("X509_set_pubkey failed") }

            for ext in extensions where chb_x509_add_ext(cert, issuer ?? cert, ext.nid, ext.value) != 1 {
                throw CertificateError.openSSL("adding extension \(ext.value.debugDescription) failed")
            }
            if !dnsNames.isEmpty { try addSubjectAltNames(cert, dnsNames) }

            guard X509_sign(cert, issuerKey, EVP_sha256()) > 0 else { throw CertificateError.openSSL("X509_sign failed") }
            return cert
        } catch {
            X509_free(cert)
            throw error
        }
    }

    /// A uniformly random, non-zero 128-bit serial (positive: the bytes are read as unsigned).
    private static func setRandomSerial(_ cert: OpaquePointer) throws {
        var bytes = [UInt8](repeating: 0, count: 16)
        repeat {
            guard RAND_bytes(&bytes, Int32(bytes.count)) == 1 else { throw CertificateError.openSSL("RAND_bytes failed") }
        } while bytes.allSatisfy { $0 == 0 }
        guard let bn = BN_bin2bn(bytes, Int32(bytes.count), nil) else { throw CertificateError.openSSL("BN_bin2bn failed") }
        defer { BN_free(bn) }
        guard let serial = BN_to_ASN1_INTEGER(bn, nil) else { throw CertificateError.openSSL("BN_to_ASN1_INTEGER failed") }
        defer { ASN1_INTEGER_free(serial) }
        guard X509_set_serialNumber(cert, serial) == 1 else { throw CertificateError.openSSL("X509_set_serialNumber failed") }
    }

    private static func setTime(_ cert: OpaquePointer, _ time: time_t, notAfter: Bool) throws {
        guard let asn1 = ASN1_TIME_set(nil, time) else { throw CertificateError.openSSL("ASN1_TIME_set failed") }
        defer { ASN1_TIME_free(asn1) }
        let ok = notAfter ? X509_set1_notAfter(cert, asn1) : X509_set1_notBefore(cert, asn1)
        guard ok == 1 else { throw CertificateError.openSSL("setting the validity window failed") }
    }

    /// subjectAltName built entry by entry (no config-string parsing, so names cannot inject other entries).
    private static func addSubjectAltNames(_ cert: OpaquePointer, _ dnsNames: [String]) throws {
        guard let names = GENERAL_NAMES_new() else { throw CertificateError.openSSL("GENERAL_NAMES_new failed") }
        defer { GENERAL_NAMES_free(names) }
        for dns in dnsNames where chb_x509_san_push_dns(names, dns, dns.utf8.count) != 1 {
            throw CertificateError.openSSL("adding DNS name \(dns.debugDescription) failed")
        }
        guard X509_add1_ext_i2d(cert, NID_subject_alt_name, UnsafeMutableRawPointer(names), 0, 0) == 1 else {
            throw CertificateError.openSSL("adding subjectAltName failed")
        }
    }

    /// Runs `write` against a fresh memory BIO and returns what it wrote.
    private static func writePEM(_ what: String, _ write: (OpaquePointer) -> Int32) throws -> String {
        guard let bio = BIO_new(BIO_s_mem()) else { throw CertificateError.openSSL("BIO_new failed") }
        defer { BIO_free(bio) }
        guard write(bio) == 1 else { throw CertificateError.openSSL("writing the \(what) PEM failed") }
        var data: UnsafePointer<CChar>?
        let count = chb_pem_mem_data(bio, &data)
        guard count > 0, let data else { throw CertificateError.openSSL("the \(what) PEM is empty") }
        return String(decoding: UnsafeRawBufferPointer(start: data, count: count), as: UTF8.self)
    }
}

public struct CertificateInfo: Sendable, Equatable {
    public var notBefore: Date
    public var notAfter: Date
    /// From subjectAltName, in order (other kinds of names are skipped).
    public var dnsNames: [String]
    /// The subject's first commonName, if any.
    public var commonName: String?

    /// Parses the first certificate of a PEM text.
    public init(pem: String) throws {
        ERR_clear_error()
        let cert = try readCertificate(pem)
        defer { X509_free(cert) }
        guard let before = X509_get0_notBefore(cert), let after = X509_get0_notAfter(cert) else {
            throw CertificateError.openSSL("certificate has no validity window")
        }
        notBefore = try date(before)
        notAfter = try date(after)
        dnsNames = try subjectAltDNSNames(cert)
        commonName = try subjectCommonName(cert)
    }

    /// True when `certificatePEM` verifies against `caPEM` (X509_verify_cert with a store holding only the CA,
    /// at time `at`, for the TLS-server purpose). Unparsable input gives false.
    public static func verifies(certificatePEM: String, caPEM: String, at: Date = Date()) -> Bool {
        ERR_clear_error()
        defer { ERR_clear_error() }
        guard let cert = try? readCertificate(certificatePEM) else { return false }
        defer { X509_free(cert) }
        guard let ca = try? readCertificate(caPEM) else { return false }
        defer { X509_free(ca) }
        guard let store = X509_STORE_new() else { return false }
        defer { X509_STORE_free(store) }
        guard X509_STORE_add_cert(store, ca) == 1, let ctx = X509_STORE_CTX_new() else { return false }
        defer { X509_STORE_CTX_free(ctx) }
        guard X509_STORE_CTX_init(ctx, store, cert, nil) == 1,
              X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER) == 1 else { return false }
        let seconds = at.timeIntervalSince1970.rounded(.down)
        guard seconds.isFinite, abs(seconds) < 1e15 else { return false }
        X509_STORE_CTX_set_time(ctx, 0, time_t(seconds))
        return X509_verify_cert(ctx) == 1
    }

    /// True when the PEM private key matches the certificate's public key (X509_check_private_key).
    /// Unparsable input gives false.
    public static func keyMatches(certificatePEM: String, privateKeyPEM: String) -> Bool {
        ERR_clear_error()
        defer { ERR_clear_error() }
        guard let cert = try? readCertificate(certificatePEM) else { return false }
        defer { X509_free(cert) }
        guard let key = try? withPEMBIO(privateKeyPEM, { PEM_read_bio_PrivateKey($0, nil, nil, nil) }) else {
            return false
        }
        defer { EVP_PKEY_free(key) }
        return X509_check_private_key(cert, key) == 1
    }
}

/// Runs `body` on a read-only memory BIO over `pem` (valid only during the call).
private func withPEMBIO<T>(_ pem: String, _ body: (OpaquePointer) throws -> T) throws -> T {
    try pem.withCString { text in
        guard let bio = BIO_new_mem_buf(text, -1) else { throw CertificateError.openSSL("BIO_new_mem_buf failed") }
        defer { BIO_free(bio) }
        return try body(bio)
    }
}

/// The first certificate in `pem` (caller frees with X509_free).
private func readCertificate(_ pem: String) throws -> OpaquePointer {
    try withPEMBIO(pem) { bio in
        guard let cert = PEM_read_bio_X509(bio, nil, nil, nil) else {
            throw CertificateError.openSSL("could not read a PEM certificate")
        }
        return cert
    }
}

private func date(_ time: UnsafePointer<ASN1_TIME>) throws -> Date {
    var parts = tm()
    guard ASN1_TIME_to_tm(time, &parts) == 1 else { throw CertificateError.openSSL("invalid certificate time") }
    return Date(timeIntervalSince1970: TimeInterval(timegm(&parts)))
}

private func subjectAltDNSNames(_ cert: OpaquePointer) throws -> [String] {
    guard let names = chb_x509_get_san(cert) else {
        guard X509_get_ext_by_NID(cert, NID_subject_alt_name, -1) < 0 else {
            throw CertificateError.openSSL("malformed subjectAltName")
        }
        return []
    }
    defer { GENERAL_NAMES_free(names) }
    var result: [String] = []
    for index in 0..<max(0, chb_x509_san_count(names)) {
        var length = 0
        if let bytes = chb_x509_san_dns_at(names, index, &length) {
            result.append(String(decoding: UnsafeBufferPointer(start: bytes, count: length), as: UTF8.self))
        }
    }
    return result
}

private func subjectCommonName(_ cert: OpaquePointer) throws -> String? {
    guard let name = X509_get_subject_name(cert) else { return nil }
    let index = X509_NAME_get_index_by_NID(name, NID_commonName, -1)
    guard index >= 0, let entry = X509_NAME_get_entry(name, index),
          let value = X509_NAME_ENTRY_get_data(entry) else { return nil }
    var utf8: UnsafeMutablePointer<UInt8>?
    let count = ASN1_STRING_to_UTF8(&utf8, value)
    guard count >= 0, let utf8 else { throw CertificateError.openSSL("invalid commonName") }
    defer { CRYPTO_free(utf8, #fileID, #line) }
    return String(decoding: UnsafeBufferPointer(start: utf8, count: Int(count)), as: UTF8.self)
}
