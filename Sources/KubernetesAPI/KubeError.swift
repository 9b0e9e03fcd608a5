import Foundation
import Storage

/// A failure talking to the Kubernetes API: an opaque code (what callers branch on), the HTTP
/// status (0 when there was no answer), Kubernetes' `reason` and a message for people. Decoded
/// from the API server's `Status` body when there is one. Messages never contain credentials.
public struct KubeError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let raw: String
        private init(_ raw: String) { self.raw = raw }
        public var description: String { raw }

        /// 404: the object (or its kind) does not exist.
        public static let notFound = Code("not found")
        /// 409 AlreadyExists: a create found an object of that name.
        public static let alreadyExists = Code("already exists")
        /// 409 Conflict: the object changed since the resourceVersion that was sent.
        public static let conflict = Code("conflict")
        /// 410 Gone / Expired: a watch or list from a resourceVersion the server no longer has.
        public static let gone = Code("gone")
        /// 401: the credentials were refused.
        public static let unauthorized = Code("unauthorized")
        /// 403: the credentials are not allowed to do this.
        public static let forbidden = Code("forbidden")
        /// 400 / 422, or a body that is not what it should be.
        public static let invalid = Code("invalid")
        /// Worth retrying: no connection, a broken connection, a timeout, 429, 5xx.
        public static let transient = Code("transient")
        /// The TLS handshake failed (the server's certificate is not trusted, or ours was refused).
        public static let tls = Code("tls")
        /// The configuration (kubeconfig, in-cluster files, token file) is missing or wrong.
        public static let config = Code("config")
        /// A leader election ended because another replica holds the lease.
        public static let leadershipLost = Code("leadership lost")
        /// Anything else.
        public static let other = Code("other")
    }

    public let code: Code
    /// The HTTP status; 0 when the server did not answer.
    public let status: Int
    /// Kubernetes' machine-readable reason (`NotFound`, `Conflict`, `AlreadyExists`, …); may be empty.
    public let reason: String
    public let message: String

    public init(_ code: Code, _ message: String, status: Int = 0, reason: String = "") {
        self.code = code
        self.message = message
        self.status = status
        self.reason = reason
    }

    public var description: String { message }

    /// The error for an HTTP answer that is not a success, from its `Status` body when it has one.
    /// `context` says what was asked ("get checlusterbackups che/nightly at https://…").
    public static func http(status: Int, body: Data, context: String) -> KubeError {
        var reason = ""
        var detail = ""
        if let parsed = try? JSON(data: body), parsed["kind"]?.string == "Status" {
            reason = parsed["reason"]?.string ?? ""
            detail = parsed["message"]?.string ?? ""
        } else {
            // Not a Status (a proxy's page, plain text): the first line of it, briefly.
            let text = String(decoding: body.prefix(200), as: UTF8.self)
            detail = text.split(whereSeparator: \.isNewline).first.map(String.init)?
                .trimmingCharacters(in: .whitespaces) ?? ""
        }
        let code = Self.code(status: status, reason: reason)
        let phrase = Self.phrases[status].map { " " + $0 } ?? ""
        var text: String
        switch code {
        case .unauthorized: text = "the API server refused the credentials (401 Unauthorized)"
        case .forbidden: text = "forbidden (403)" + (detail.isEmpty ? "" : ": " + detail)
        default: text = detail.isEmpty ? "HTTP \(status)\(phrase)" : "\(detail) (HTTP \(status))"
        }
        if code == .unauthorized, !detail.isEmpty, detail.lowercased() != "unauthorized" { text += ": " + detail }
        return KubeError(code, "\(context): \(text)", status: status, reason: reason)
    }

    static func code(status: Int, reason: String) -> Code {
        switch status {
        case 404: return .notFound
        case 409: return reason == "AlreadyExists" ? .alreadyExists : .conflict
        case 410: return .gone
        case 401: return .unauthorized
        case 403: return .forbidden
        case 400, 422: return .invalid
        case 408, 429, 500...599: return .transient
        default: return reason == "Expired" || reason == "Gone" ? .gone : .other
        }
    }

    /// The error for a transfer that got no HTTP answer. `server` names the API server.
    static func transport(_ error: any Error, context: String, server: String) -> any Error {
        switch error {
        case is CancellationError, is KubeError:
            return error
        case let failure as CurlFailure:
            switch failure.kind {
            case .tls:
                return KubeError(.tls, "\(context): TLS with the API server \(server) failed: \(failure.detail) "
                    + "(check the cluster's certificate-authority)")
            case .connect, .resolve:
                return KubeError(.transient, "\(context): cannot reach the API server at \(server): \(failure.detail)")
            case .network:
                return KubeError(.transient, "\(context): connection to the API server \(server) failed: \(failure.detail)")
            default:
                return KubeError(.other, "\(context): \(failure)")
            }
        case let storage as StorageError:
            return KubeError(storage.isTransient ? .transient : .other, "\(context): \(storage.message)")
        default:
            return KubeError(.other, "\(context): \(error)")
        }
    }

    /// The same error with every occurrence of `secret` replaced (defence against a server that
    /// echoes a credential back).
    func redacting(_ secret: String?) -> KubeError {
        guard let secret, secret.count >= 4, message.contains(secret) else { return self }
        return KubeError(code, message.replacingOccurrences(of: secret, with: "<redacted>"), status: status, reason: reason)
    }
}

extension KubeError {
    static let phrases: [Int: String] = [
        400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
        406: "Not Acceptable", 408: "Request Timeout", 409: "Conflict", 410: "Gone", 413: "Payload Too Large",
        415: "Unsupported Media Type", 422: "Unprocessable Entity", 429: "Too Many Requests",
        500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
        504: "Gateway Timeout",
    ]
}
