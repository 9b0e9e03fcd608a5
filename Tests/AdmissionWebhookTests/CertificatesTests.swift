/// Behaviour of `CertificateAuthority.issue` and `CertificateInfo` through the Swift API alone:
/// names, validity window, chain verification, key matching, input validation, malformed PEM,
/// and a 200-round loop. Cross-checks with the `openssl` CLI live in OpenSSLCLITests.swift.
import Foundation
import Testing
import TestSupport
@testable import AdmissionWebhook

let dnsNames = ["hook", "hook.backup-system", "hook.backup-system.svc"]
let year: TimeInterval = 365 * 86_400

@Suite struct CertificatesTests {
    @Test func issuedCertificateReportsRequestedNamesAndValidity() throws {
        let start = Date()
        let issued = try CertificateAuthority.issue(commonName: "hook.backup-system.svc", dnsNames: dnsNames, validity: year)
        let info = try CertificateInfo(pem: issued.certificatePEM)
        #expect(info.dnsNames == dnsNames)
        #expect(info.commonName == "hook.backup-system.svc")
        #expect(abs(info.notAfter.timeIntervalSince(start.addingTimeInterval(year))) < 60)
        #expect(abs(info.notBefore.timeIntervalSince(start.addingTimeInterval(-300))) < 60)

        let ca = try CertificateInfo(pem: issued.caCertificatePEM)
        #expect(ca.commonName == "hook.backup-system.svc CA")
        #expect(ca.dnsNames.isEmpty)
        #expect(ca.notAfter == info.notAfter)

        #expect(issued.privateKeyPEM.hasPrefix("-----BEGIN PRIVATE KEY-----\n"))  // PKCS#8, unencrypted
        #expect(issued.certificatePEM.hasPrefix("-----BEGIN CERTIFICATE-----\n"))
        #expect(issued.caCertificatePEM.hasPrefix("-----BEGIN CERTIFICATE-----\n"))
        #expect(issued.certificatePEM != issued.caCertificatePEM)
    }

    @Test func validityWindowIsExactForAGivenNow() throws {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let issued = try CertificateAuthority.issue(commonName: "x", dnsNames: ["x"], validity: 3_600, now: now)
        let info = try CertificateInfo(pem: issued.certificatePEM)
        #expect(info.notBefore == Date(timeIntervalSince1970: 1_800_000_000 - 300))
        #expect(info.notAfter == Date(timeIntervalSince1970: 1_800_000_000 + 3_600))
        // Past 2049 X.509 switches to GeneralizedTime; the round trip must still be exact.
        let later = Date(timeIntervalSince1970: 4_000_000_000)
        let far = try CertificateInfo(pem: try CertificateAuthority.issue(commonName: "x", dnsNames: ["x"], validity: 60,
                                                                           now: later).certificatePEM)
        #expect(far.notAfter == later.addingTimeInterval(60))
    }

    @Test func verifiesOnlyAgainstItsOwnCAAndInsideTheWindow() throws {
        let now = Date()
        let a = try CertificateAuthority.issue(commonName: "a", dnsNames: dnsNames, validity: year, now: now)
        let b = try CertificateAuthority.issue(commonName: "a", dnsNames: dnsNames, validity: year, now: now)
        #expect(CertificateInfo.verifies(certificatePEM: a.certificatePEM, caPEM: a.caCertificatePEM))
        #expect(CertificateInfo.verifies(certificatePEM: b.certificatePEM, caPEM: b.caCertificatePEM))
        #expect(!CertificateInfo.verifies(certificatePEM: a.certificatePEM, caPEM: b.caCertificatePEM))
        #expect(!CertificateInfo.verifies(certificatePEM: b.certificatePEM, caPEM: a.caCertificatePEM))
        // Time matters: valid from now-5min, expired after now+validity.
        #expect(CertificateInfo.verifies(certificatePEM: a.certificatePEM, caPEM: a.caCertificatePEM,
                                         at: now.addingTimeInterval(-200)))
        #expect(!CertificateInfo.verifies(certificatePEM: a.certificatePEM, caPEM: a.caCertificatePEM,
                                          at: now.addingTimeInterval(-600)))
        #expect(!CertificateInfo.verifies(certificatePEM: a.certificatePEM, caPEM: a.caCertificatePEM,
                                          at: now.addingTimeInterval(year + 60)))
        // The server certificate is no CA; the CA is no server certificate; junk never verifies.
        #expect(!CertificateInfo.verifies(certificatePEM: a.caCertificatePEM, caPEM: a.certificatePEM))
        #expect(!CertificateInfo.verifies(certificatePEM: a.caCertificatePEM, caPEM: a.caCertificatePEM))
        #expect(!CertificateInfo.verifies(certificatePEM: "junk", caPEM: a.caCertificatePEM))
        #expect(!CertificateInfo.verifies(certificatePEM: a.certificatePEM, caPEM: ""))
    }

    @Test func keyMatchesOnlyItsOwnCertificate() throws {
        let a = try CertificateAuthority.issue(commonName: "a", dnsNames: ["a"], validity: year)
        let b = try CertificateAuthority.issue(commonName: "b", dnsNames: ["b"], validity: year)
        #expect(CertificateInfo.keyMatches(certificatePEM: a.certificatePEM, privateKeyPEM: a.privateKeyPEM))
        #expect(CertificateInfo.keyMatches(certificatePEM: b.certificatePEM, privateKeyPEM: b.privateKeyPEM))
        #expect(!CertificateInfo.keyMatches(certificatePEM: a.certificatePEM, privateKeyPEM: b.privateKeyPEM))
        #expect(!CertificateInfo.keyMatches(certificatePEM: a.caCertificatePEM, privateKeyPEM: a.privateKeyPEM))
        #expect(!CertificateInfo.keyMatches(certificatePEM: a.certificatePEM, privateKeyPEM: "not a key"))
        #expect(!CertificateInfo.keyMatches(certificatePEM: "not a cert", privateKeyPEM: a.privateKeyPEM))
    }

    @Test func parsesTheFirstCertificateOfABundle() throws {
        let issued = try CertificateAuthority.issue(commonName: "first", dnsNames: ["first"], validity: year)
        let bundle = issued.privateKeyPEM + issued.certificatePEM + issued.caCertificatePEM
        let info = try CertificateInfo(pem: bundle)
        #expect(info.commonName == "first")
        #expect(info.dnsNames == ["first"])
    }

    @Test(arguments: [
        "",
        "garbage",
        "-----BEGIN CERTIFICATE-----\n!!!! not base64 !!!!\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nAAAAAAAAAAAAAAAA\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n",
    ])
    func malformedPEMThrowsAOneLineError(pem: String) throws {
        let error = #expect(throws: CertificateError.self) { try CertificateInfo(pem: pem) }
        let thrown = try #require(error)
        let message = thrown.message
        #expect(!message.isEmpty)
        #expect(!message.contains("\n"))
        #expect(message.hasPrefix("could not read a PEM certificate"))
        #expect(message.contains("error:"), "OpenSSL's ERR text should be included: \(message)")
        #expect(thrown.description == message)
        // The failure leaves no stale OpenSSL error behind for the next caller.
        let good = try CertificateAuthority.issue(commonName: "ok", dnsNames: ["ok"], validity: 60)
        #expect(try CertificateInfo(pem: good.certificatePEM).commonName == "ok")
    }

    @Test func rejectsBadIssueArguments() throws {
        #expect(throws: CertificateError.self) { try CertificateAuthority.issue(commonName: "a", dnsNames: [], validity: year) }
        for bad in ["", "has space", "tab\t", "new\nline", "ünïcode", String(repeating: "a", count: 254)] {
            #expect(throws: CertificateError.self) {
                try CertificateAuthority.issue(commonName: "a", dnsNames: ["ok", bad], validity: year)
            }
        }
        for validity in [0, -1, .infinity, .nan] as [TimeInterval] {
            #expect(throws: CertificateError.self) {
                try CertificateAuthority.issue(commonName: "a", dnsNames: ["a"], validity: validity)
            }
        }
        // Commas cannot smuggle extra subjectAltName entries: the name is stored verbatim.
        let odd = try CertificateAuthority.issue(commonName: "a", dnsNames: ["a,DNS:evil"], validity: year)
        #expect(try CertificateInfo(pem: odd.certificatePEM).dnsNames == ["a,DNS:evil"])
        // X.509 caps commonName at 64 characters; OpenSSL's reason is carried in the message.
        let error = #expect(throws: CertificateError.self) {
            try CertificateAuthority.issue(commonName: String(repeating: "c", count: 80), dnsNames: ["a"], validity: year)
        }
        #expect(try #require(error).message.contains("error:"))
    }

    @Test func twoHundredRoundsStayConsistent() async throws { try await onThread { try Self.twoHundredRounds() } }

    static func twoHundredRounds() throws {
        var pemsSeen = Set<String>()
        var previous: ServingCertificate?
        for round in 0..<200 {
            let name = "hook-\(round).ns.svc"
            let issued = try CertificateAuthority.issue(commonName: name, dnsNames: [name, "hook-\(round)"], validity: 3_600)
            let info = try CertificateInfo(pem: issued.certificatePEM)
            #expect(info.dnsNames == [name, "hook-\(round)"])
            #expect(info.commonName == name)
            #expect(CertificateInfo.verifies(certificatePEM: issued.certificatePEM, caPEM: issued.caCertificatePEM))
            #expect(CertificateInfo.keyMatches(certificatePEM: issued.certificatePEM, privateKeyPEM: issued.privateKeyPEM))
            if let previous {
                #expect(!CertificateInfo.verifies(certificatePEM: issued.certificatePEM, caPEM: previous.caCertificatePEM))
                #expect(!CertificateInfo.keyMatches(certificatePEM: issued.certificatePEM, privateKeyPEM: previous.privateKeyPEM))
            }
            #expect(throws: CertificateError.self) { try CertificateInfo(pem: "junk \(round)") }
            pemsSeen.insert(issued.certificatePEM)
            previous = issued
        }
        #expect(pemsSeen.count == 200)
    }
}
