import Foundation
import Logging
import Storage

/// A client of one Kubernetes API server. Objects are JSON; every call names its resource kind.
/// Requests run on the client's own threads (libcurl is blocking); each watch gets a thread of
/// its own for as long as it runs, so watches never starve requests. Cancelling the calling task
/// aborts its transfer.
public final class KubeClient: Sendable {
    public let config: KubeConfig
    /// The namespace calls use when they name none.
    public let namespace: String
    let logger: Logger
    let pool: BlockingPool
    let transport: CurlTransport
    let settings: CurlSettings
    let tokens: TokenCache
    /// Seconds a single request may take (watches excepted).
    let requestTimeout: Int
    /// Objects per page of a list (`limit`); further pages follow the server's `continue` token.
    let listPageSize: Int

    public init(config: KubeConfig, logger: Logger, threads: Int = 6, requestTimeoutSeconds: Int = 60, listPageSize: Int = 500) {
        self.config = config
        namespace = config.namespace
        self.logger = logger
        var settings = CurlSettings()
        settings.connectTimeout = 10
        settings.caPEM = config.caPEM
        settings.clientCertPEM = config.clientCertPEM
        settings.clientKeyPEM = config.clientKeyPEM
        settings.insecureSkipVerify = config.insecureSkipTLSVerify
        settings.tcpKeepAliveSeconds = 30
        self.settings = settings
        pool = BlockingPool(threads: threads, name: "kube-api")
        transport = CurlTransport(pool: pool, settings: settings, redactedLocation: config.server)
        tokens = TokenCache(config.token)
        requestTimeout = requestTimeoutSeconds
        self.listPageSize = max(1, listPageSize)
    }

    deinit { pool.shutdown() }

    /// The kind of body a patch is.
    public struct PatchType: Hashable, Sendable {
        public let contentType: String
        /// RFC 7386 JSON merge patch: objects merge, `null` removes, arrays are replaced.
        public static let merge = PatchType(contentType: "application/merge-patch+json")
        /// RFC 6902 JSON patch: a list of operations.
        public static let json = PatchType(contentType: "application/json-patch+json")
        /// Kubernetes' strategic merge patch (built-in kinds only: lists merge by key).
        public static let strategic = PatchType(contentType: "application/strategic-merge-patch+json")
    }

    // MARK: - Objects

    public func get(_ r: KubeResource, _ name: String, namespace: String? = nil) async throws -> JSON {
        let ns = scope(r, namespace)
        return try await call("GET", r.path(namespace: ns, name: name), what: "get \(describe(r, ns, name))", idempotent: true)
    }

    /// The object, or nil when it does not exist.
    public func getIfPresent(_ r: KubeResource, _ name: String, namespace: String? = nil) async throws -> JSON? {
        do {
            return try await get(r, name, namespace: namespace)
        } catch let error as KubeError where error.code == .notFound {
            return nil
        }
    }

    /// Every object of a kind (in `namespace`, or the client's; `KubeClient.allNamespaces` for all),
    /// following the server's pages.
    public func list(_ r: KubeResource, namespace: String? = nil, labelSelector: String? = nil,
                     fieldSelector: String? = nil) async throws -> KubeList {
        let ns = scope(r, namespace)
        var query: [(String, String)] = [("limit", "\(listPageSize)")]
        if let labelSelector { query.append(("labelSelector", labelSelector)) }
        if let fieldSelector { query.append(("fieldSelector", fieldSelector)) }
        var items: [JSON] = []
        var next: String?
        repeat {
            let page = try await call("GET", r.path(namespace: ns), query: query + (next.map { [("continue", $0)] } ?? []),
                                      what: "list \(describe(r, ns, nil))", idempotent: true)
            items += page["items"]?.array ?? []
            next = page[path: "metadata", "continue"]?.string.flatMap { $0.isEmpty ? nil : $0 }
            if next == nil {
                return KubeList(items: items, resourceVersion: page[path: "metadata", "resourceVersion"]?.string ?? "")
            }
        } while true
    }

    /// Creates the object; its namespace is `namespace`, else its own, else the client's.
    public func create(_ r: KubeResource, _ object: JSON, namespace: String? = nil) async throws -> JSON {
        let ns = scope(r, namespace ?? object.namespace)
        let body = completed(object, r)
        return try await call("POST", r.path(namespace: ns), body: body, what: "create \(describe(r, ns, object.name))")
    }

    /// Replaces the object (PUT) or one of its subresources. It carries `metadata.resourceVersion`:
    /// the server answers 409 (`.conflict`) when the object changed since.
    public func replace(_ r: KubeResource, _ object: JSON, namespace: String? = nil, subresource: String? = nil) async throws -> JSON {
        guard let name = object.name, !name.isEmpty else {
            throw KubeError(.invalid, "replace \(r): the object has no metadata.name")
        }
        let ns = scope(r, namespace ?? object.namespace)
        let what = "replace \(describe(r, ns, name))" + (subresource.map { " (\($0))" } ?? "")
        return try await call("PUT", r.path(namespace: ns, name: name, subresource: subresource), body: completed(object, r), what: what)
    }

    public func patch(_ r: KubeResource, _ name: String, _ patch: JSON, type: PatchType = .merge, namespace: String? = nil,
                      subresource: String? = nil) async throws -> JSON {
        let ns = scope(r, namespace)
        let what = "patch \(describe(r, ns, name))" + (subresource.map { " (\($0))" } ?? "")
        return try await call("PATCH", r.path(namespace: ns, name: name, subresource: subresource), body: patch,
                              contentType: type.contentType, what: what)
    }

    /// Deletes the object; false when it was not there. `propagation` is the propagationPolicy
    /// for its dependents (`Background`, `Foreground`, `Orphan`; nil: the server's default).
    @discardableResult
    public func delete(_ r: KubeResource, _ name: String, namespace: String? = nil,
                       propagation: String? = "Background") async throws -> Bool {
        let ns = scope(r, namespace)
        do {
            _ = try await call("DELETE", r.path(namespace: ns, name: name), query: propagation.map { [("propagationPolicy", $0)] } ?? [],
                               what: "delete \(describe(r, ns, name))")
            return true
        } catch let error as KubeError where error.code == .notFound {
            return false
        }
    }

    /// Pass as `namespace` to list or watch a namespaced kind across all namespaces.
    public static let allNamespaces = ""

    // MARK: - Plumbing

    /// The namespace a call on `r` goes to: none for cluster-scoped kinds.
    func scope(_ r: KubeResource, _ namespace: String?) -> String? {
        r.namespaced ? (namespace ?? self.namespace) : nil
    }

    func describe(_ r: KubeResource, _ namespace: String?, _ name: String?) -> String {
        var text = "\(r)"
        if let name { text += " " + (namespace.map { $0.isEmpty ? "" : $0 + "/" } ?? "") + name }
        else if let namespace, !namespace.isEmpty { text += " in \(namespace)" }
        return text + " at \(config.server)"
    }

    /// apiVersion and kind filled in when the object lacks them.
    func completed(_ object: JSON, _ r: KubeResource) -> JSON {
        var object = object
        if object["apiVersion"] == nil { object["apiVersion"] = .string(r.apiVersion) }
        if object["kind"] == nil { object["kind"] = .string(r.kind) }
        return object
    }

    /// One request whose successful answer is a JSON object. Idempotent requests are tried again
    /// (twice, shortly after) when they fail transiently.
    func call(_ method: String, _ path: String, query: [(String, String)] = [], body: JSON? = nil,
              contentType: String = "application/json", what: String, idempotent: Bool = false) async throws -> JSON {
        var request = try makeRequest(method, path, query: query)
        if let body {
            request.body = try body.data()
            request.headers.append(("Content-Type", contentType))
        }
        var attempt = 0
        while true {
            attempt += 1
            do {
                let response = try await perform(request, what: what)
                guard (200..<300).contains(response.status) else {
                    throw KubeError.http(status: response.status, body: response.body, context: what)
                        .redacting(tokens.lastToken)
                }
                return response.body.isEmpty ? .object([:]) : try JSON(data: response.body)
            } catch let error as KubeError where idempotent && error.code == .transient && attempt < 3 {
                logger.debug("retrying after a transient failure", metadata: ["error": "\(error)", "attempt": "\(attempt)"])
                try await Task.sleep(for: .milliseconds(200 * attempt))
            }
        }
    }

    /// A request to the server with the headers every call carries (credentials included).
    func makeRequest(_ method: String, _ path: String, query: [(String, String)]) throws -> CurlRequest {
        var url = config.server + path
        if !query.isEmpty {
            url += "?" + query.map { Self.queryEncode($0.0) + "=" + Self.queryEncode($0.1) }.joined(separator: "&")
        }
        var request = CurlRequest(method: method, url: url)
        request.headers = [("Accept", "application/json"), ("User-Agent", "chebackup")]
        if let token = try tokens.current() { request.headers.append(("Authorization", "Bearer " + token)) }
        request.typedFailures = true
        request.timeoutSeconds = requestTimeout
        return request
    }

    /// Runs a transfer on `transport`, aborted when the calling task is cancelled; failures
    /// without an HTTP answer become KubeErrors naming the server.
    func perform(_ request: CurlRequest, on transport: CurlTransport? = nil, what: String) async throws -> CurlResponse {
        try Task.checkCancellation()
        let cancelled = Locked(false)
        var request = request
        let previous = request.isCancelled
        request.isCancelled = { cancelled.value || previous?() == true }
        do {
            return try await withTaskCancellationHandler {
                try await (transport ?? self.transport).perform(request)
            } onCancel: {
                cancelled.withLock { $0 = true }
            }
        } catch {
            throw KubeError.transport(error, context: what, server: config.server)
        }
    }

    static func queryEncode(_ text: String) -> String {
        let allowed = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }
}

/// A list's objects and the resourceVersion to watch from.
public struct KubeList: Sendable {
    public var items: [JSON]
    public var resourceVersion: String

    public init(items: [JSON], resourceVersion: String) {
        self.items = items
        self.resourceVersion = resourceVersion
    }
}
