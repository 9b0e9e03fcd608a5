import AdmissionWebhook
import Foundation
import Kubernetes
import KubernetesAPI
import Logging
import Testing
import TestSupport

/// The controller makes and renews the webhook's serving certificate (against the API server
/// stand-in), and the webhook serves AdmissionReviews over TLS with it, picking up a renewed one
/// without a restart. Checked with the real curl and openssl.
@Suite struct WebhookServingTests {
    static let logger: Logger = { var l = Logger(label: "test"); l.logLevel = .critical; return l }()

    static func client(_ api: KubeAPIServer) throws -> KubeClient {
        var config = try api.config()
        config.namespace = "eclipse-che"
        return KubeClient(config: config, logger: logger)
    }

    /// The MutatingWebhookConfiguration of manifests/webhook.yaml, applied with kubectl.
    static func applyWebhookConfiguration(_ api: KubeAPIServer) async throws {
        let text = try String(contentsOfFile: KubeAPIServer.repoRoot + "/manifests/webhook.yaml", encoding: .utf8)
        let documents = try ManifestInjector.documents(yaml: text)
        let configuration = try #require(documents.first { $0["kind"]?.string == "MutatingWebhookConfiguration" })
        let applied = try await api.apply(String(decoding: try configuration.data(), as: UTF8.self))
        #expect(applied.status == 0, "\(applied.stderr)")
    }

    static func pem(_ secret: JSON, _ key: String) throws -> String {
        let encoded = try #require(secret[path: "data", key]?.string)
        return String(decoding: try #require(Data(base64Encoded: encoded)), as: UTF8.self)
    }

    @Test(.enabled(if: KubeAPIServer.available))
    func theCertificateIsIssuedKeptAndRenewed() async throws {
        let api = try await KubeAPIServer()
        try await Self.applyWebhookConfiguration(api)
        let client = try Self.client(api)
        let certificates = WebhookCertificates(client: client, namespace: "eclipse-che", settings: WebhookCertificateSettings(), logger: Self.logger)
        let names = ["chebackup-webhook", "chebackup-webhook.eclipse-che", "chebackup-webhook.eclipse-che.svc", "chebackup-webhook.eclipse-che.svc.cluster.local"]

        let first = try await certificates.ensure()
        #expect(first == .init(issued: true, caBundlesWritten: 1, configurationMissing: false))
        let secret = try await client.get(.secrets, "chebackup-webhook-tls")
        #expect(secret["type"]?.string == "kubernetes.io/tls")
        let (certificate, key, ca) = (try Self.pem(secret, "tls.crt"), try Self.pem(secret, "tls.key"), try Self.pem(secret, "ca.crt"))
        let info = try CertificateInfo(pem: certificate)
        #expect(info.dnsNames == names)
        #expect(abs(info.notAfter.timeIntervalSinceNow - 365 * 86_400) < 600)
        #expect(CertificateInfo.verifies(certificatePEM: certificate, caPEM: ca))
        #expect(CertificateInfo.keyMatches(certificatePEM: certificate, privateKeyPEM: key))
        let configuration = try await client.get(.mutatingWebhookConfigurations, "chebackup-sidecar-injector")
        #expect(configuration["webhooks"]?[0]?[path: "clientConfig", "caBundle"]?.string == Data(ca.utf8).base64EncodedString())

        // A second look changes nothing.
        #expect(try await certificates.ensure() == .init(issued: false, caBundlesWritten: 0, configurationMissing: false))
        #expect(try await client.get(.secrets, "chebackup-webhook-tls")["data"] == secret["data"])

        // 340 days on, less than 30 are left: a new one, and its CA in the configuration.
        let later = Date().addingTimeInterval(340 * 86_400)
        #expect(try await certificates.ensure(now: later).issued)
        let renewed = try await client.get(.secrets, "chebackup-webhook-tls")
        let renewedCA = try Self.pem(renewed, "ca.crt")
        #expect(renewedCA != ca)
        #expect(try CertificateInfo(pem: try Self.pem(renewed, "tls.crt")).notAfter > info.notAfter)
        #expect(try await client.get(.mutatingWebhookConfigurations, "chebackup-sidecar-injector")["webhooks"]?[0]?[path: "clientConfig", "caBundle"]?.string
                == Data(renewedCA.utf8).base64EncodedString())

        // A certificate for other names, a key that is not its own, or garbage: replaced.
        let other = try CertificateAuthority.issue(commonName: "elsewhere", dnsNames: ["elsewhere.example"], validity: 365 * 86_400)
        let stranger = try CertificateAuthority.issue(commonName: "x", dnsNames: names, validity: 365 * 86_400)
        for (label, crt, k, c) in [("other names", other.certificatePEM, other.privateKeyPEM, other.caCertificatePEM),
                                   ("another key", stranger.certificatePEM, other.privateKeyPEM, stranger.caCertificatePEM),
                                   ("another CA", stranger.certificatePEM, stranger.privateKeyPEM, other.caCertificatePEM),
                                   ("garbage", "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n", "x", "y")] {
            var tampered = try await client.get(.secrets, "chebackup-webhook-tls")
            tampered["data"] = ["tls.crt": .string(Data(crt.utf8).base64EncodedString()), "tls.key": .string(Data(k.utf8).base64EncodedString()),
                                "ca.crt": .string(Data(c.utf8).base64EncodedString())]
            _ = try await client.replace(.secrets, tampered, namespace: "eclipse-che")
            #expect(try await certificates.ensure().issued, "\(label): not replaced")
            let now = try await client.get(.secrets, "chebackup-webhook-tls")
            #expect(try CertificateInfo(pem: try Self.pem(now, "tls.crt")).dnsNames == names, "\(label)")
        }
    }

    @Test(.enabled(if: KubeAPIServer.available))
    func withoutTheWebhookConfigurationTheSecretIsStillMade() async throws {
        let api = try await KubeAPIServer()
        let client = try Self.client(api)
        let outcome = try await WebhookCertificates(client: client, namespace: "eclipse-che", settings: WebhookCertificateSettings(),
                                                    logger: Self.logger).ensure()
        #expect(outcome == .init(issued: true, caBundlesWritten: 0, configurationMissing: true))
        #expect(try await client.getIfPresent(.secrets, "chebackup-webhook-tls") != nil)
    }

    /// curl to the webhook by its Service name (resolved to loopback), trusting only `ca`.
    static func curl(_ port: Int, _ path: String, ca: String, body: Data? = nil) async throws -> CommandResult {
        let host = "chebackup-webhook.eclipse-che.svc"
        var args = ["-sS", "--max-time", "10", "--cacert", ca, "--resolve", "\(host):\(port):127.0.0.1", "-w", "\n%{http_code}"]
        if let body {
            args += ["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@-"]
            return try await runAsync(try #require(which("curl")), args + ["https://\(host):\(port)\(path)"], stdin: body)
        }
        return try await runAsync(try #require(which("curl")), args + ["https://\(host):\(port)\(path)"])
    }

    @Test(.enabled(if: which("curl") != nil))
    func theWebhookServesReviewsOverTLSAndReloadsARenewedCertificate() async throws {
        let dir = TempDir("chebackup-webhook")
        defer { dir.remove() }
        let names = ["chebackup-webhook", "chebackup-webhook.eclipse-che", "chebackup-webhook.eclipse-che.svc"]
        func install(_ issued: ServingCertificate, tag: String) throws {
            // As the kubelet updates a mounted Secret: new files, then renamed into place.
            try issued.certificatePEM.write(toFile: dir.file("tls.crt.new"), atomically: false, encoding: .utf8)
            try issued.privateKeyPEM.write(toFile: dir.file("tls.key.new"), atomically: false, encoding: .utf8)
            try issued.caCertificatePEM.write(toFile: dir.file("ca-\(tag).crt"), atomically: false, encoding: .utf8)
            #expect(rename(dir.file("tls.key.new"), dir.file("tls.key")) == 0 && rename(dir.file("tls.crt.new"), dir.file("tls.crt")) == 0)
        }
        try install(try CertificateAuthority.issue(commonName: names[2], dnsNames: names, validity: 86_400), tag: "first")
        let port = freeLoopbackPort()
        let server = WebhookServer(host: "127.0.0.1", port: port, certificateFile: dir.file("tls.crt"), keyFile: dir.file("tls.key"),
                                   handler: InjectionTests.handler, logger: Self.logger)
        let (listening, ready) = AsyncStream.makeStream(of: Int.self)
        let task = Task { try await server.run { ready.yield($0) } }
        defer { task.cancel() }
        var iterator = listening.makeAsyncIterator()
        #expect(await iterator.next() == port)

        let health = try await Self.curl(port, "/healthz", ca: dir.file("ca-first.crt"))
        #expect(health.stdout.hasSuffix("\n200"), "\(health.stdout) \(health.stderr)")
        let review = InjectionTests.review(try InjectionTests.pod(fromDeployment: "che-postgres.yaml"))
        let answer = try await Self.curl(port, "/inject?timeout=5s", ca: dir.file("ca-first.crt"), body: try review.data())
        #expect(answer.stdout.hasSuffix("\n200"), "\(answer.stdout) \(answer.stderr)")
        let document = try JSON(data: Data(answer.stdout.split(separator: "\n").dropLast().joined(separator: "\n").utf8))
        #expect(document[path: "response", "patchType"]?.string == "JSONPatch")
        #expect(document[path: "response", "uid"] == review[path: "request", "uid"])
        let bad = try await Self.curl(port, "/inject", ca: dir.file("ca-first.crt"), body: Data("{".utf8))
        #expect(bad.stdout.hasSuffix("\n400"), "\(bad.stdout)")
        let huge = try await Self.curl(port, "/inject", ca: dir.file("ca-first.crt"), body: Data(repeating: 0x20, count: 5 << 20))
        #expect(huge.stdout.hasSuffix("\n413"), "\(huge.stdout) \(huge.stderr)")

        // Renewed: new connections get the new certificate; the old CA no longer vouches for it.
        try install(try CertificateAuthority.issue(commonName: names[2], dnsNames: names, validity: 86_400), tag: "second")
        let renewed = try await Self.curl(port, "/healthz", ca: dir.file("ca-second.crt"))
        #expect(renewed.stdout.hasSuffix("\n200"), "\(renewed.stdout) \(renewed.stderr)")
        let stale = try await Self.curl(port, "/healthz", ca: dir.file("ca-first.crt"))
        #expect(stale.status != 0, "the old CA still verifies the server")
        // An unreadable renewal keeps the last good certificate.
        try "garbage".write(toFile: dir.file("tls.crt.new"), atomically: false, encoding: .utf8)
        #expect(rename(dir.file("tls.crt.new"), dir.file("tls.crt")) == 0)
        let kept = try await Self.curl(port, "/healthz", ca: dir.file("ca-second.crt"))
        #expect(kept.stdout.hasSuffix("\n200"), "\(kept.stdout) \(kept.stderr)")
    }
}
