/// Cross-checks issued certificates with the real `openssl` command-line tool (run through
/// Foundation's Process): chain verification, extensions, expiry, key pairing, serials, and a
/// TLS handshake between `openssl s_server` and `openssl s_client` with hostname verification.
import Foundation
import Testing
import TestSupport
@testable import AdmissionWebhook
#if canImport(Glibc)
import Glibc
#endif

@Suite struct OpenSSLCLITests {
    @Test func opensslAgreesWithTheIssuedCertificates() async throws { try await onThread { try Self.opensslAgrees() } }

    static func opensslAgrees() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let issued = try CertificateAuthority.issue(commonName: "hook.backup-system.svc", dnsNames: dnsNames, validity: year)
        let other = try CertificateAuthority.issue(commonName: "hook.backup-system.svc", dnsNames: dnsNames, validity: year)
        try dir.write(issued, prefix: "")
        try dir.write(other, prefix: "other-")

        let verify = try openssl(["verify", "-CAfile", "ca.pem", "cert.pem"], in: dir)
        #expect(verify.status == 0)
        #expect(verify.output.trimmingCharacters(in: .whitespacesAndNewlines) == "cert.pem: OK")
        let wrongCA = try openssl(["verify", "-CAfile", "other-ca.pem", "cert.pem"], in: dir)
        #expect(wrongCA.status != 0)
        #expect(wrongCA.output.contains("unable to get local issuer certificate"))

        let extensions = ["-noout", "-ext", "subjectAltName,basicConstraints,keyUsage,extendedKeyUsage"]
        let server = try openssl(["x509", "-in", "cert.pem"] + extensions, in: dir)
        #expect(server.status == 0)
        #expect(extensionValues(server.output) == [
            "X509v3 Basic Constraints: critical": "CA:FALSE",
            "X509v3 Key Usage: critical": "Digital Signature, Key Encipherment",
            "X509v3 Extended Key Usage:": "TLS Web Server Authentication",
            "X509v3 Subject Alternative Name:": "DNS:hook, DNS:hook.backup-system, DNS:hook.backup-system.svc",
        ])
        let ca = try openssl(["x509", "-in", "ca.pem"] + extensions, in: dir)
        #expect(ca.status == 0)
        #expect(extensionValues(ca.output) == [
            "X509v3 Basic Constraints: critical": "CA:TRUE",
            "X509v3 Key Usage: critical": "Certificate Sign, CRL Sign",
        ])

        let live = try openssl(["x509", "-in", "cert.pem", "-noout", "-checkend", "0"], in: dir)
        #expect(live.status == 0)
        #expect(live.output.contains("Certificate will not expire"))
        let nextYear = try openssl(["x509", "-in", "cert.pem", "-noout", "-checkend", "\(Int(year) + 3_600)"], in: dir)
        #expect(nextYear.status != 0)
        #expect(nextYear.output.contains("Certificate will expire"))

        let names = try openssl(["x509", "-in", "cert.pem", "-noout", "-subject", "-issuer"], in: dir)
        #expect(names.output.split(separator: "\n") == ["subject=CN = hook.backup-system.svc",
                                                        "issuer=CN = hook.backup-system.svc CA"])
        let text = try openssl(["x509", "-in", "cert.pem", "-noout", "-text"], in: dir).output
        #expect(text.contains("Signature Algorithm: ecdsa-with-SHA256"))
        #expect(text.contains("NIST CURVE: P-256"))
        #expect(text.contains("Version: 3 (0x2)"))

        // Serials: positive (no sign), at most 128 bits, different for every certificate.
        var serials: [String] = []
        for file in ["cert.pem", "ca.pem", "other-cert.pem", "other-ca.pem"] {
            let out = try openssl(["x509", "-in", file, "-noout", "-serial"], in: dir).output
            let hex = out.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "serial=", with: "")
            #expect(!hex.isEmpty && hex.count <= 32 && hex.allSatisfy(\.isHexDigit), "serial \(out)")
            serials.append(hex)
        }
        #expect(Set(serials).count == 4)

        // The key file is PKCS#8 P-256 and is the certificate's key.
        let key = try openssl(["pkey", "-in", "key.pem", "-noout", "-text"], in: dir)
        #expect(key.status == 0)
        #expect(key.output.contains("NIST CURVE: P-256"))
        let keyPublic = try openssl(["pkey", "-in", "key.pem", "-pubout"], in: dir)
        let certPublic = try openssl(["x509", "-in", "cert.pem", "-noout", "-pubkey"], in: dir)
        #expect(keyPublic.status == 0 && certPublic.status == 0)
        #expect(keyPublic.output == certPublic.output)
        let otherPublic = try openssl(["pkey", "-in", "other-key.pem", "-pubout"], in: dir)
        #expect(otherPublic.output != certPublic.output)
    }

    @Test func tlsHandshakeVerifiesChainAndHostname() async throws { try await onThread { try Self.tlsHandshake() } }

    static func tlsHandshake() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let issued = try CertificateAuthority.issue(commonName: "hook.backup-system.svc", dnsNames: dnsNames, validity: year)
        let other = try CertificateAuthority.issue(commonName: "hook.backup-system.svc", dnsNames: dnsNames, validity: year)
        try dir.write(issued, prefix: "")
        try dir.write(other, prefix: "other-")

        let (server, port) = try startServer(in: dir)
        defer { stop(server) }
        func connect(_ name: String, caFile: String = "ca.pem") throws -> RunResult {
            try openssl(["s_client", "-connect", "127.0.0.1:\(port)", "-servername", name, "-CAfile", caFile,
                         "-verify_return_error", "-verify_hostname", name], in: dir)
        }
        for name in dnsNames {
            let client = try connect(name)
            #expect(client.output.contains("Verify return code: 0 (ok)"), "\(name): \(client.output)")
            #expect(client.status == 0)
        }
        let mismatch = try connect("elsewhere.example")
        #expect(mismatch.output.contains("Verify return code: 62 (hostname mismatch)"))
        #expect(mismatch.status != 0)
        let untrusted = try connect(dnsNames[0], caFile: "other-ca.pem")
        #expect(!untrusted.output.contains("Verify return code: 0 (ok)"))
        #expect(untrusted.status != 0)
        #expect(server.isRunning)
    }
}

// MARK: - Helpers

struct RunResult {
    var status: Int32
    var output: String  // stdout and stderr together
}

struct TemporaryDirectory {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("certwork-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    func write(_ issued: ServingCertificate, prefix: String) throws {
        try issued.caCertificatePEM.write(to: url.appendingPathComponent("\(prefix)ca.pem"), atomically: true, encoding: .utf8)
        try issued.certificatePEM.write(to: url.appendingPathComponent("\(prefix)cert.pem"), atomically: true, encoding: .utf8)
        try issued.privateKeyPEM.write(to: url.appendingPathComponent("\(prefix)key.pem"), atomically: true, encoding: .utf8)
    }

    func remove() { try? FileManager.default.removeItem(at: url) }
}

/// Runs `openssl arguments` in `dir` with empty stdin, killing it if it takes over 60 seconds.
func openssl(_ arguments: [String], in dir: TemporaryDirectory) throws -> RunResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["openssl"] + arguments
    process.currentDirectoryURL = dir.url
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let pid = process.processIdentifier
    let watchdog = DispatchWorkItem { kill(pid, SIGKILL) }
    DispatchQueue.global().asyncAfter(deadline: .now() + 60, execute: watchdog)
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    watchdog.cancel()
    return RunResult(status: process.terminationStatus, output: String(decoding: data, as: UTF8.self))
}

/// `openssl s_server -www` on a free loopback port, once it prints ACCEPT (retries if the port was taken).
func startServer(in dir: TemporaryDirectory) throws -> (Process, UInt16) {
    for attempt in 0..<3 {
        let port = UInt16(freeLoopbackPort())
        let log = dir.url.appendingPathComponent("server-\(attempt).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let output = try FileHandle(forWritingTo: log)
        defer { try? output.close() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl", "s_server", "-accept", "127.0.0.1:\(port)", "-cert", "cert.pem", "-key", "key.pem", "-www"]
        process.currentDirectoryURL = dir.url
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline, process.isRunning {
            if let text = try? String(contentsOf: log, encoding: .utf8), text.contains("ACCEPT") { return (process, port) }
            usleep(50_000)
        }
        stop(process)
    }
    throw CertificateError(message: "openssl s_server did not start")
}

/// SIGKILL, then reap. (`Process.terminate()` sends SIGTERM, which children spawned from a
/// libdispatch worker thread inherit as blocked, so it would never arrive.)
func stop(_ process: Process) {
    if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    process.waitUntilExit()
}

/// `openssl x509 -ext` output as header line → value lines (joined), both trimmed.
func extensionValues(_ output: String) -> [String: String] {
    var values: [String: String] = [:]
    var header: String?
    for line in output.split(separator: "\n") {
        let trimmed = line.trimmingCharacters(in: .whitespaces)
        if line.hasPrefix(" ") || line.hasPrefix("\t"), let header {
            values[header] = values[header].map { "\($0) \(trimmed)" } ?? trimmed
        } else {
            header = trimmed
        }
    }
    return values
}
