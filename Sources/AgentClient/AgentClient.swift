/// AgentClient: the controller's side of the control protocol. It connects to an agent,
/// authenticates both ends, and sends requests, routing events and results by request id.
import Foundation
import LineProtocol
import NIOCore
import NIOPosix
import Repository
import Storage
import Synchronization

/// An agent's address: `HOST:PORT` or `unix:/path`.
public enum AgentEndpoint: Sendable, CustomStringConvertible, Hashable {
    case tcp(host: String, port: Int)
    case unix(path: String)

    public init(_ text: String) throws {
        if text.hasPrefix("unix:") {
            self = .unix(path: String(text.dropFirst(5)))
            return
        }
        guard let address = try? HostPort(text) else {
            throw AgentError(code: "invalid_address", message: "agent address \"\(text)\" is neither HOST:PORT nor unix:/path")
        }
        self = .tcp(host: address.host, port: address.port)
    }

    public var description: String {
        switch self {
        case .tcp(let host, let port): "\(host):\(port)"
        case .unix(let path): "unix:\(path)"
        }
    }
}

/// A failure talking to an agent: the protocol's error code (or a local one) and a message.
public struct AgentError: Error, CustomStringConvertible, Sendable {
    public let code: String
    public let message: String
    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { message }
}

/// An authenticated connection to one agent.
public final class AgentSession: Sendable {
    public let hello: Hello
    public let endpoint: AgentEndpoint
    let key: SessionKey
    let out: OutboundLines
    let router: Router

    init(hello: Hello, endpoint: AgentEndpoint, key: SessionKey, out: OutboundLines, router: Router) {
        self.hello = hello
        self.endpoint = endpoint
        self.key = key
        self.out = out
        self.router = router
    }

    /// Sends a request and waits for its result; events go to `onEvent`.
    func call(_ id: String, _ message: Message, onEvent: @escaping @Sendable (Event) -> Void = { _ in }) async throws -> ResultMessage {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<ResultMessage, any Error>) in
            router.register(id, continuation: continuation, onEvent: onEvent)
            if !out.send(message) {
                router.fail(id, AgentError(code: "connection", message: "cannot send to the agent at \(endpoint): the connection is closed"))
            }
        }
    }

    static func newID() -> String { UUID().uuidString.lowercased() }

    public func ping() async throws {
        let id = Self.newID()
        _ = try await call(id, .ping(Simple(id: id)))
    }

    /// "idle" or "busy", and the running request's id.
    public func status() async throws -> (state: String, running: String?) {
        let id = Self.newID()
        let r = try await call(id, .status(Simple(id: id)))
        return (r.state ?? "unknown", r.running)
    }

    public func backup(url: String, secrets: RepositorySecrets, parts: [String]? = nil, installation: String? = nil,
                       onEvent: @escaping @Sendable (Event) -> Void = { _ in }) async throws -> [Part] {
        let id = Self.newID()
        let spec = RepositorySpec(url: url, secrets: key.seal(secrets, requestID: id))
        let request = BackupRequest(id: id, repository: spec, parts: parts, installation: installation)
        return try await call(id, .backup(request), onEvent: onEvent).parts ?? []
    }

    public func restore(url: String, secrets: RepositorySecrets, snapshot: SnapshotID, parts: [String]? = nil,
                        keepExtraneous: Bool = false, rewrite: [Rewrite] = [],
                        onEvent: @escaping @Sendable (Event) -> Void = { _ in }) async throws -> [String] {
        let id = Self.newID()
        let spec = RepositorySpec(url: url, secrets: key.seal(secrets, requestID: id))
        let request = RestoreRequest(id: id, repository: spec, snapshot: snapshot.hex, parts: parts, keepExtraneous: keepExtraneous,
                                     rewrite: rewrite.isEmpty ? nil : rewrite)
        return try await call(id, .restore(request), onEvent: onEvent).restored ?? []
    }
}

/// Routes incoming messages to the requests waiting for them.
final class Router: Sendable {
    struct Pending {
        let continuation: CheckedContinuation<ResultMessage, any Error>
        let onEvent: @Sendable (Event) -> Void
    }
    private let pending = Mutex<[String: Pending]>([:])
    private let closed = Mutex<AgentError?>(nil)
    /// When the agent last sent something, or a request started waiting.
    private let lastHeard = Mutex(ContinuousClock.now)

    func register(_ id: String, continuation: CheckedContinuation<ResultMessage, any Error>, onEvent: @escaping @Sendable (Event) -> Void) {
        if let error = closed.withLock({ $0 }) {
            continuation.resume(throwing: error)
            return
        }
        heard()
        pending.withLock { $0[id] = Pending(continuation: continuation, onEvent: onEvent) }
    }

    func heard() { lastHeard.withLock { $0 = .now } }

    /// How long the agent has been silent, if longer than `limit` while a request waits.
    func silentFor(longerThan limit: Duration) -> Duration? {
        guard !pending.withLock({ $0.isEmpty }) else { return nil }
        let silent = ContinuousClock.now - lastHeard.withLock { $0 }
        return silent > limit ? silent : nil
    }

    func route(_ message: Message) {
        switch message {
        case .event(let e):
            let handler = pending.withLock { $0[e.id]?.onEvent }
            handler?(e)
        case .result(let r):
            pending.withLock { $0.removeValue(forKey: r.id) }?.continuation.resume(returning: r)
        case .error(let e):
            if let id = e.id {
                pending.withLock { $0.removeValue(forKey: id) }?.continuation.resume(throwing: AgentError(code: e.code, message: e.message))
            } else {
                failAll(AgentError(code: e.code, message: "agent: \(e.message)"))
            }
        default:
            break
        }
    }

    func fail(_ id: String, _ error: AgentError) {
        pending.withLock { $0.removeValue(forKey: id) }?.continuation.resume(throwing: error)
    }

    func failAll(_ error: AgentError) {
        closed.withLock { if $0 == nil { $0 = error } }
        let all = pending.withLock { p -> [Pending] in
            defer { p = [:] }
            return Array(p.values)
        }
        for p in all { p.continuation.resume(throwing: error) }
    }
}

public enum AgentClient {
    /// Connects, authenticates both ends, runs `body` with the session, then closes. While a
    /// request waits, the agent must send something (it sends an event a second while it works)
    /// at least every `idleTimeout`: a line withheld in transit must not hang the controller.
    public static func withSession<T: Sendable>(_ endpoint: AgentEndpoint, token: SharedToken, expectedRole: String? = nil,
                                                handshakeTimeout: Duration = .seconds(30), idleTimeout: Duration = .seconds(120),
                                                _ body: @Sendable (AgentSession) async throws -> T) async throws -> T {
        let bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connectTimeout(.seconds(5))
        let makeChannel: @Sendable (any Channel) -> EventLoopFuture<NIOAsyncChannel<ByteBuffer, ByteBuffer>> = { channel in
            channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
        }
        let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            switch endpoint {
            case .tcp(let host, let port):
                channel = try await bootstrap.connect(host: host, port: port, channelInitializer: makeChannel)
            case .unix(let path):
                channel = try await bootstrap.connect(unixDomainSocketPath: path, channelInitializer: makeChannel)
            }
        } catch {
            throw AgentError(code: "unreachable", message: "cannot connect to the agent at \(endpoint): \(error)")
        }
        return try await channel.executeThenClose { inbound, outbound in
            let router = Router()
            let out = OutboundLines()
            // Set when `auth` is sent: it checks every line after `welcome`.
            let opener = Locked<LineOpener?>(nil)
            let (handshake, handshakeInput) = AsyncStream<(Message, Data)>.makeStream()
            return try await withThrowingTaskGroup(of: T?.self) { group in
                group.addTask {
                    for await line in out.lines { try await outbound.write(ByteBuffer(bytes: line)) }
                    return nil
                }
                group.addTask {
                    try await read(inbound, endpoint: endpoint, opener: opener, handshake: handshakeInput, router: router)
                    return nil
                }
                group.addTask {
                    while true {
                        try await Task.sleep(for: idleTimeout / 4)
                        if let silent = router.silentFor(longerThan: idleTimeout) {
                            router.failAll(AgentError(code: "timeout", message: "the agent at \(endpoint) sent nothing for \(silent.components.seconds) s while a request waited for it"))
                            return nil
                        }
                    }
                }
                // The handshake must finish in time: a silent peer must not hang the controller.
                let timedOut = Locked(false)
                let timer = Task {
                    try await Task.sleep(for: handshakeTimeout)
                    timedOut.withLock { $0 = true }
                    handshakeInput.finish()
                }
                defer {
                    // Ending our side makes the agent close the connection, which ends the reader.
                    out.finish()
                    group.cancelAll()
                }
                let session: AgentSession
                do {
                    session = try await authenticate(endpoint: endpoint, token: token, expectedRole: expectedRole,
                                                     messages: handshake, out: out, opener: opener, router: router)
                } catch {
                    timer.cancel()
                    if timedOut.withLock({ $0 }) {
                        throw AgentError(code: "handshake", message: "the agent at \(endpoint) did not complete the handshake within \(handshakeTimeout)")
                    }
                    throw error
                }
                timer.cancel()
                return try await body(session)
            }
        }
    }

    /// Reads the agent's lines: the handshake's go to `handshake` (with their bytes, which the
    /// proofs cover), every line after `welcome` must verify and goes to the router. A line that
    /// does not verify, or is longer than the limit, ends the connection with its reason.
    static func read(_ inbound: NIOAsyncChannelInboundStream<ByteBuffer>, endpoint: AgentEndpoint, opener: Locked<LineOpener?>,
                     handshake: AsyncStream<(Message, Data)>.Continuation, router: Router) async throws {
        var framer = LineFramer(maxLineLength: maxLineLength)
        var welcomed = false
        defer {
            handshake.finish()
            router.failAll(AgentError(code: "connection", message: "the agent at \(endpoint) closed the connection"))
        }
        do {
            for try await buffer in inbound {
                router.heard()
                for item in framer.feed(buffer.readableBytesView) {
                    guard welcomed else {
                        guard case .line(let line) = item, !line.isEmpty, case .success(let message) = LineCodec.decode(line) else { continue }
                        switch message {
                        case .welcome: welcomed = true; handshake.yield((message, line))
                        case .hello: handshake.yield((message, line))
                        case .error(let e) where e.id == nil: handshake.yield((message, line)); router.route(message)
                        default: break
                        }
                        continue
                    }
                    if case .line(let line) = item, line.isEmpty { continue }
                    let opened: LineOpener.Opened = opener.withLock { o -> LineOpener.Opened in
                        guard o != nil else { return .tampered("the agent at \(endpoint) sent a line before it was authenticated") }
                        switch item {
                        case .tooLong(let n): return .tampered(o!.tooLong(n, limit: maxLineLength))
                        case .line(let line): return o!.open(line)
                        }
                    }
                    switch opened {
                    case .message(let message):
                        router.route(message)
                    case .invalid(let error):
                        router.failAll(AgentError(code: "protocol", message: "the agent at \(endpoint) sent an invalid message: \(error.message)"))
                        return
                    case .tampered(let why):
                        router.failAll(AgentError(code: ErrorCode.tampered.rawValue, message: "agent at \(endpoint): \(why)"))
                        return
                    }
                }
            }
        } catch {}
    }

    /// The longest line accepted from an agent (a backup's result lists its parts).
    public static let maxLineLength = 64 << 20

    static func authenticate(endpoint: AgentEndpoint, token: SharedToken, expectedRole: String?, messages: AsyncStream<(Message, Data)>,
                             out: OutboundLines, opener: Locked<LineOpener?>, router: Router) async throws -> AgentSession {
        var iterator = messages.makeAsyncIterator()
        func next(_ what: String) async throws -> (Message, Data) {
            guard let (message, line) = await iterator.next() else {
                throw AgentError(code: "handshake", message: "the agent at \(endpoint) closed the connection during the handshake (\(what))")
            }
            if case .error(let e) = message { throw AgentError(code: e.code, message: "agent at \(endpoint): \(e.message)") }
            return (message, line)
        }
        let (first, helloLine) = try await next("waiting for hello")
        guard case .hello(let hello) = first else {
            throw AgentError(code: "handshake", message: "the agent at \(endpoint) did not say hello")
        }
        if let expectedRole, hello.role != expectedRole {
            throw AgentError(code: "wrong_role", message: "the agent at \(endpoint) has role \(hello.role), expected \(expectedRole)")
        }
        guard let version = negotiateVersion(offered: hello.protocols) else {
            throw AgentError(code: "unsupported_version",
                             message: "the agent at \(endpoint) speaks protocol \(hello.protocols), this controller \(supportedProtocolVersions)")
        }
        guard let agentNonce = Data(base64Encoded: hello.nonce), agentNonce.count == 32 else {
            throw AgentError(code: "handshake", message: "the agent at \(endpoint) sent a malformed nonce")
        }
        let controllerNonce = SharedToken.newNonce()
        let keys = token.sessionKeys(agentNonce: agentNonce, controllerNonce: controllerNonce)
        let (sealer, lineOpener) = keys.controllerSide
        opener.withLock { $0 = lineOpener }
        let proof = token.controllerProof(agentNonce: agentNonce, controllerNonce: controllerNonce, hello: helloLine, version: version)
        out.send(.auth(Auth(protocol: version, nonce: controllerNonce.base64EncodedString(), proof: proof.base64EncodedString())))
        guard case .welcome(let welcome) = try await next("waiting for welcome").0 else {
            throw AgentError(code: "handshake", message: "the agent at \(endpoint) did not answer the authentication")
        }
        guard let agentProof = Data(base64Encoded: welcome.proof),
              Primitives.constantTimeEqual(agentProof, token.agentProof(agentNonce: agentNonce, controllerNonce: controllerNonce,
                                                                         hello: helloLine, version: version)) else {
            throw AgentError(code: "unauthorized", message: "the agent at \(endpoint) could not prove it holds the token (or the handshake was changed in transit): refusing it")
        }
        out.startSealing(sealer)
        return AgentSession(hello: hello, endpoint: endpoint, key: keys.sealing, out: out, router: router)
    }
}
