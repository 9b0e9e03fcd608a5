import AdmissionWebhook
import ControllerCore
import Foundation
import KubernetesAPI
import Logging

/// Names and lifetimes of the webhook's serving certificate.
public struct WebhookCertificateSettings: Sendable {
    /// False: the controller leaves the Secret and the caBundle alone (certificates made elsewhere,
    /// e.g. by cert-manager).
    public var enabled = true
    public var service = "chebackup-webhook"
    public var secret = "chebackup-webhook-tls"
    public var configuration = "chebackup-sidecar-injector"
    public var validity: TimeInterval = 365 * 86_400
    /// A certificate with less than this left is renewed.
    public var renewBefore: TimeInterval = 30 * 86_400
    /// How often the leader looks again.
    public var checkInterval: Duration = .seconds(3600)
    public init() {}
}

/// The webhook's serving certificate, made and renewed by the controller: a CA and a certificate
/// for the webhook Service's DNS names in the Secret `chebackup-webhook-tls` (type
/// kubernetes.io/tls: `tls.crt`, `tls.key`, `ca.crt`), and the CA in the `caBundle` of each
/// webhook of the MutatingWebhookConfiguration `chebackup-sidecar-injector` that calls that
/// Service. A certificate is replaced when it is missing, unreadable, for other names, signed by
/// another CA, not matching its key, or within `renewBefore` of expiring; the webhook server
/// reloads it from the mounted Secret.
public struct WebhookCertificates: Sendable {
    let client: KubeClient
    let namespace: String
    let settings: WebhookCertificateSettings
    let logger: Logger

    public init(client: KubeClient, namespace: String, settings: WebhookCertificateSettings, logger: Logger) {
        self.client = client
        self.namespace = namespace
        self.settings = settings
        self.logger = logger
    }

    public var dnsNames: [String] {
        let s = settings.service
        return [s, "\(s).\(namespace)", "\(s).\(namespace).svc", "\(s).\(namespace).svc.cluster.local"]
    }

    /// What `ensure` did.
    public struct Outcome: Sendable, Equatable {
        public var issued: Bool
        public var caBundlesWritten: Int
        public var configurationMissing: Bool
        public init(issued: Bool, caBundlesWritten: Int, configurationMissing: Bool) {
            self.issued = issued
            self.caBundlesWritten = caBundlesWritten
            self.configurationMissing = configurationMissing
        }
    }

    /// Makes or renews the certificate if it needs it, then writes the CA where it is missing.
    @discardableResult
    public func ensure(now: Date = Date()) async throws -> Outcome {
        let existing = try await client.getIfPresent(.secrets, settings.secret, namespace: namespace)
        var outcome = Outcome(issued: false, caBundlesWritten: 0, configurationMissing: false)
        let reason: String? = existing.map { renewalReason($0, now: now) } ?? "there is none"
        let ca: String
        if let existing, reason == nil, let current = Self.pem(existing, "ca.crt") {
            ca = current
        } else {
            let issued = try CertificateAuthority.issue(commonName: dnsNames[2], dnsNames: dnsNames, validity: settings.validity, now: now)
            try await write(issued, over: existing)
            logger.notice("issued the webhook's serving certificate (Secret \(settings.secret), \(dnsNames[2]), valid \(Int(settings.validity / 86_400)) days): \(reason ?? "")")
            ca = issued.caCertificatePEM
            outcome.issued = true
        }
        guard let configuration = try await client.getIfPresent(.mutatingWebhookConfigurations, settings.configuration) else {
            logger.warning("no MutatingWebhookConfiguration \(settings.configuration): the webhook is not installed (manifests/webhook.yaml), so no CA was written")
            outcome.configurationMissing = true
            return outcome
        }
        let bundle = Data(ca.utf8).base64EncodedString()
        var operations: [JSON] = []
        for (index, webhook) in (configuration["webhooks"]?.array ?? []).enumerated()
        where webhook[path: "clientConfig", "service", "name"]?.string == settings.service
            && (webhook[path: "clientConfig", "service", "namespace"]?.string ?? namespace) == namespace
            && webhook[path: "clientConfig", "caBundle"]?.string != bundle {
            // The test makes the patch fail if the list changed since it was read.
            operations.append(["op": "test", "path": .string("/webhooks/\(index)/name"), "value": webhook["name"] ?? .null])
            operations.append(["op": "add", "path": .string("/webhooks/\(index)/clientConfig/caBundle"), "value": .string(bundle)])
        }
        if !operations.isEmpty {
            _ = try await client.patch(.mutatingWebhookConfigurations, settings.configuration, .array(operations), type: .json)
            outcome.caBundlesWritten = operations.count / 2
            logger.notice("wrote the CA into \(outcome.caBundlesWritten) webhook(s) of the MutatingWebhookConfiguration \(settings.configuration)")
        }
        return outcome
    }

    /// Why the Secret's certificate must be replaced, or nil when it is good.
    func renewalReason(_ secret: JSON, now: Date) -> String? {
        guard let certificate = Self.pem(secret, "tls.crt"), let key = Self.pem(secret, "tls.key"), let ca = Self.pem(secret, "ca.crt") else {
            return "the Secret lacks tls.crt, tls.key or ca.crt"
        }
        let info: CertificateInfo
        do { info = try CertificateInfo(pem: certificate) } catch { return "its certificate cannot be read (\(error))" }
        if Set(info.dnsNames) != Set(dnsNames) { return "it is for \(info.dnsNames.joined(separator: ", ")), not \(dnsNames.joined(separator: ", "))" }
        if info.notAfter.timeIntervalSince(now) < settings.renewBefore {
            return "it expires at \(ISO8601DateFormatter().string(from: info.notAfter))"
        }
        if !CertificateInfo.verifies(certificatePEM: certificate, caPEM: ca, at: now) { return "it is not signed by the CA in ca.crt" }
        if !CertificateInfo.keyMatches(certificatePEM: certificate, privateKeyPEM: key) { return "tls.key is not its key" }
        return nil
    }

    func write(_ issued: ServingCertificate, over existing: JSON?) async throws {
        let data: JSON = ["tls.crt": .string(Data(issued.certificatePEM.utf8).base64EncodedString()),
                          "tls.key": .string(Data(issued.privateKeyPEM.utf8).base64EncodedString()),
                          "ca.crt": .string(Data(issued.caCertificatePEM.utf8).base64EncodedString())]
        if var secret = existing {
            secret["data"] = data
            secret["stringData"] = nil
            secret["type"] = "kubernetes.io/tls"
            _ = try await client.replace(.secrets, secret, namespace: namespace)
        } else {
            let secret: JSON = ["apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                                "metadata": ["name": .string(settings.secret),
                                             "labels": ["app.kubernetes.io/part-of": "che-backup", "app.kubernetes.io/component": "webhook"]],
                                "data": data]
            _ = try await client.create(.secrets, secret, namespace: namespace)
        }
    }

    /// A key of the Secret, as `Secret.value` reads it (stringData, else base64 data).
    static func pem(_ secret: JSON, _ key: String) -> String? {
        (try? secret.decode(Secret.self))?.value(key)
    }

    /// `ensure`, its failure logged.
    public func ensureLogging() async {
        do { try await ensure() } catch is CancellationError {} catch {
            logger.error("the webhook's serving certificate: \(describe(error))")
        }
    }

    /// Runs `ensure` now and every `checkInterval` until cancelled; a failure is logged and tried
    /// again at the next look (it must not stop backups).
    public func maintain() async {
        while !Task.isCancelled {
            await ensureLogging()
            do { try await Task.sleep(for: settings.checkInterval) } catch { return }
        }
    }
}
