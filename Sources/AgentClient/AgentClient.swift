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
    let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    let router: Router

    init(hello: Hello, endpoint: AgentEndpoint, key: SessionKey, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>, router: Router) {
        self.hello = hello
        self.endpoint = endpoint
        self.key = key
        self.outbound = outbound
        self.router = router
    }

    func write(_ message: Message) async throws {
        var line = LineCodec.encode(message)
        line.append(0x0A)
        try await outbound.write(ByteBuffer(bytes: line))
    }

    /// Sends a request and waits for its result; events go to `onEvent`.
    func call(_ id: String, _ message: Message, onEvent: @escaping @Sendable (Event) -> Void = { _ in }) async throws -> ResultMessage {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<ResultMessage, any Error>) in
            router.register(id, continuation: continuation, onEvent: onEvent)
            Task {
                do { try await write(message) } catch {
                    router.fail(id, AgentError(code: "connection", message: "cannot send to the agent at \(endpoint): \(error)"))
                }
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

    public func backup(url: String, secrets: RepositorySecrets, parts: [String]? = nil,
                       onEvent: @escaping @Sendable (Event) -> Void = { _ in }) async throws -> [Part] {
        let id = Self.newID()
        let spec = RepositorySpec(url: url, secrets: key.seal(secrets, requestID: id))
        return try await call(id, .backup(BackupRequest(id: id, repository: spec, parts: parts)), onEvent: onEvent).parts ?? []
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

    func register(_ id: String, continuation: CheckedContinuation<ResultMessage, any Error>, onEvent: @escaping @Sendable (Event) -> Void) {
        if let error = closed.withLock({ $0 }) {
            continuation.resume(throwing: error)
            return
        }
        pending.withLock { $0[id] = Pending(continuation: continuation, onEvent: onEvent) }
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
    /// Connects, authenticates both ends, runs `body` with the session, then closes.
    public static func withSession<T: Sendable>(_ endpoint: AgentEndpoint, token: SharedToken, expectedRole: String? = nil,
                                                handshakeTimeout: Duration = .seconds(10),
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
            let (handshake, handshakeInput) = AsyncStream<Message>.makeStream()
            return try await withThrowingTaskGroup(of: T?.self) { group in
                group.addTask {
                    var framer = LineFramer()
                    do {
                        for try await buffer in inbound {
                            for item in framer.feed(buffer.readableBytesView) {
                                guard case .line(let line) = item, !line.isEmpty, case .success(let message) = LineCodec.decode(line) else { continue }
                                switch message {
                                case .hello, .welcome: handshakeInput.yield(message)
                                case .error(let e) where e.id == nil: handshakeInput.yield(message); router.route(message)
                                default: router.route(message)
                                }
                            }
                        }
                    } catch {}
                    handshakeInput.finish()
                    router.failAll(AgentError(code: "connection", message: "the agent at \(endpoint) closed the connection"))
                    return nil
                }
                // The handshake must finish in time: a silent peer must not hang the controller.
                let timer = Task {
                    try await Task.sleep(for: handshakeTimeout)
                    handshakeInput.finish()
                }
                defer {
                    // Ending our side makes the agent close the connection, which ends the reader.
                    outbound.finish()
                    group.cancelAll()
                }
                let session: AgentSession
                do {
                    session = try await authenticate(endpoint: endpoint, token: token, expectedRole: expectedRole,
                                                     messages: handshake, outbound: outbound, router: router)
                } catch {
                    timer.cancel()
                    throw error
                }
                timer.cancel()
                return try await body(session)
            }
        }
    }

    static func authenticate(endpoint: AgentEndpoint, token: SharedToken, expectedRole: String?, messages: AsyncStream<Message>,
                             outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>, router: Router) async throws -> AgentSession {
        var iterator = messages.makeAsyncIterator()
        func next(_ what: String) async throws -> Message {
            guard let message = await iterator.next() else {
                throw AgentError(code: "handshake", message: "the agent at \(endpoint) closed the connection during the handshake (\(what))")
            }
            if case .error(let e) = message { throw AgentError(code: e.code, message: "agent at \(endpoint): \(e.message)") }
            return message
        }
        guard case .hello(let hello) = try await next("waiting for hello") else {
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
        let proof = token.controllerProof(agentNonce: agentNonce, controllerNonce: controllerNonce)
        var line = LineCodec.encode(.auth(Auth(protocol: version, nonce: controllerNonce.base64EncodedString(), proof: proof.base64EncodedString())))
        line.append(0x0A)
        try await outbound.write(ByteBuffer(bytes: line))
        guard case .welcome(let welcome) = try await next("waiting for welcome") else {
            throw AgentError(code: "handshake", message: "the agent at \(endpoint) did not answer the authentication")
        }
        guard let agentProof = Data(base64Encoded: welcome.proof),
              Primitives.constantTimeEqual(agentProof, token.agentProof(agentNonce: agentNonce, controllerNonce: controllerNonce)) else {
            throw AgentError(code: "unauthorized", message: "the agent at \(endpoint) could not prove it holds the token: refusing it")
        }
        return AgentSession(hello: hello, endpoint: endpoint, key: token.sessionKey(agentNonce: agentNonce, controllerNonce: controllerNonce),
                            outbound: outbound, router: router)
    }
}
