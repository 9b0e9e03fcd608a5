import Foundation
import Logging
import Storage

extension KubeClient {
    /// Every object of a kind, then every change ("list, then watch", as client-go's informers):
    /// the current objects arrive as `.added` first, then changes as they happen. The watch resumes
    /// from the last resourceVersion seen; bookmarks advance it silently. When the server no
    /// longer has that history (410) the objects are listed again and only what changed since is
    /// emitted (objects deleted meanwhile as `.deleted`). A broken or ended stream reconnects, with
    /// exponential backoff and jitter while failures repeat. No version of an object is emitted
    /// twice. The stream ends only when its consumer stops (cancels or drops it), which aborts
    /// the transfer at once.
    public func watch(_ r: KubeResource, namespace: String? = nil, labelSelector: String? = nil)
        -> AsyncThrowingStream<WatchEvent, any Error>
    {
        let (stream, continuation) = AsyncThrowingStream<WatchEvent, any Error>.makeStream()
        let watcher = Watcher(client: self, resource: r, namespace: scope(r, namespace), labelSelector: labelSelector,
                              continuation: continuation)
        let task = Task { await watcher.run() }
        continuation.onTermination = { _ in
            watcher.stop()
            task.cancel()
        }
        return stream
    }
}

/// One watch's loop. It owns a thread of its own (the open stream blocks it for minutes).
final class Watcher: Sendable {
    let client: KubeClient
    let resource: KubeResource
    let namespace: String?
    let labelSelector: String?
    let continuation: AsyncThrowingStream<WatchEvent, any Error>.Continuation
    let pool: BlockingPool
    let transport: CurlTransport
    let cache = Locked(WatchCache())
    private let stopped = Locked(false)
    var logger: Logger { client.logger }
    /// The server ends each watch after this long (and a new one starts), as client-go does.
    static let timeoutSeconds = 240

    init(client: KubeClient, resource: KubeResource, namespace: String?, labelSelector: String?,
         continuation: AsyncThrowingStream<WatchEvent, any Error>.Continuation) {
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.labelSelector = labelSelector
        self.continuation = continuation
        pool = BlockingPool(threads: 1, name: "kube-watch-\(resource.plural)")
        transport = CurlTransport(pool: pool, settings: client.settings, redactedLocation: client.config.server)
    }

    deinit { pool.shutdown() }

    func stop() { stopped.withLock { $0 = true } }
    var isStopped: Bool { stopped.value || Task.isCancelled }

    var what: String { "watch \(client.describe(resource, namespace, nil))" }

    enum StreamEnd {
        /// The server closed the stream; `healthy` when it delivered something or lasted a while.
        case ended(healthy: Bool)
        case gone
    }

    func run() async {
        var backoff = Backoff()
        while !isStopped {
            var healthy = false
            do {
                if cache.value.resourceVersion == nil { try await relist() }
                switch try await streamOnce() {
                case .ended(let wasHealthy):
                    healthy = wasHealthy
                    logger.debug("watch ended, resuming", metadata: ["watch": "\(what)"])
                case .gone:
                    logger.debug("watch history expired (410), listing again", metadata: ["watch": "\(what)"])
                    cache.withLock { $0.resourceVersion = nil }
                }
            } catch is CancellationError {
                break
            } catch let error as KubeError where error.code == .gone {
                cache.withLock { $0.resourceVersion = nil }
                logger.debug("watch history expired (410), listing again", metadata: ["watch": "\(what)"])
            } catch {
                if isStopped { break }
                logger.warning("watch failed, retrying", metadata: ["watch": "\(what)", "error": "\(error)"])
            }
            if healthy {
                backoff.reset()
            } else {
                do { try await Task.sleep(for: backoff.next()) } catch { break }
            }
        }
        continuation.finish()
    }

    /// Lists the objects and emits what differs from what was emitted before.
    func relist() async throws {
        let list = try await client.list(resource, namespace: namespace ?? KubeClient.allNamespaces, labelSelector: labelSelector)
        let events = cache.withLock { $0.listed(list.items, resourceVersion: list.resourceVersion) }
        try emit(events)
    }

    func emit(_ events: [WatchEvent]) throws {
        for event in events {
            if case .terminated = continuation.yield(event) {
                stop()
                throw CancellationError()
            }
        }
    }

    /// One watch request, from the cache's resourceVersion until the server ends it.
    func streamOnce() async throws -> StreamEnd {
        var query: [(String, String)] = [("watch", "1"), ("allowWatchBookmarks", "true"),
                                         ("timeoutSeconds", "\(Self.timeoutSeconds)")]
        if let rv = cache.value.resourceVersion, !rv.isEmpty { query.append(("resourceVersion", rv)) }
        if let labelSelector { query.append(("labelSelector", labelSelector)) }
        var request = try client.makeRequest("GET", resource.path(namespace: namespace), query: query)
        request.timeoutSeconds = Self.timeoutSeconds + 60
        request.lowSpeedSeconds = 0  // quiet for minutes is normal; keepalive and the timeout notice a dead peer
        let splitter = Locked(LineSplitter(limit: 64 << 20))
        let delivered = Locked(0)
        let what = self.what
        request.isCancelled = { [stopped] in stopped.value }
        request.consume = { [self] bytes in
            if stopped.value { throw CancellationError() }
            for line in try splitter.withLock({ try $0.feed(bytes) }) {
                let event = try JSON(data: line)
                guard let type = event["type"]?.string, let object = event["object"] else {
                    throw KubeError(.invalid, "\(what): an event without type or object")
                }
                switch cache.withLock({ $0.apply(type: type, object: object) }) {
                case .emit(let events):
                    try emit(events)
                    delivered.withLock { $0 += 1 }
                case .gone:
                    throw KubeError(.gone, "\(what): the watch's history expired (410)", status: 410)
                case .failed(let message):
                    throw KubeError(.other, "\(what): \(message)")
                }
            }
        }
        let started = ContinuousClock.now
        let response = try await client.perform(request, on: transport, what: what)
        if response.status == 410 { return .gone }
        guard (200..<300).contains(response.status) else {
            throw KubeError.http(status: response.status, body: response.body, context: what).redacting(client.tokens.lastToken)
        }
        return .ended(healthy: delivered.value > 0 || ContinuousClock.now - started > .seconds(5))
    }
}
