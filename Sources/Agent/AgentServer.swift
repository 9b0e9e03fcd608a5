import Foundation
import LineProtocol
import Logging
import NIOCore
import NIOPosix
import Repository
import Storage
import Synchronization

/// Where an agent listens or a controller connects.
enum Endpoint: Sendable, CustomStringConvertible {
    case tcp(host: String, port: Int)
    case unix(path: String)

    var description: String {
        switch self {
        case .tcp(let host, let port): "\(host):\(port)"
        case .unix(let path): "unix:\(path)"
        }
    }
}

/// The agent: accepts connections, runs one authenticated session per connection, and at most
/// one backup or restore at a time across all of them.
final class AgentServer: Sendable {
    let role: any Role
    let token: SharedToken
    let installationID: String
    let maxLineLength: Int
    let logger: Logger
    let pool = BlockingPool(threads: 8)
    /// The request running now (its id and its task), if any.
    let running = Mutex<(id: String, task: Task<Void, Never>?)?>(nil)
    /// How long a connection may take to authenticate.
    let handshakeTimeout: Duration
    /// How many connections may wait to authenticate at once; more are closed at once.
    let maxUnauthenticated: Int
    /// Connections that have not authenticated yet (by object identity).
    let unauthenticated = Mutex<Set<ObjectIdentifier>>([])
    /// The longest line accepted before authentication: an `auth` line is about 200 bytes.
    static let handshakeLineLimit = 4096

    init(role: any Role, token: SharedToken, installationID: String, maxLineLength: Int, handshakeTimeout: Duration = .seconds(30),
         maxUnauthenticated: Int = 64, logger: Logger) {
        self.role = role
        self.token = token
        self.installationID = installationID
        self.maxLineLength = maxLineLength
        self.handshakeTimeout = handshakeTimeout
        self.maxUnauthenticated = maxUnauthenticated
        self.logger = logger
    }

    /// A session authenticated: it no longer counts against the limit.
    func authenticated(_ session: Session) {
        unauthenticated.withLock { _ = $0.remove(ObjectIdentifier(session)) }
    }

    func serve(_ endpoint: Endpoint, onListening: @Sendable (String) -> Void) async throws {
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        let makeChannel: @Sendable (any Channel) -> EventLoopFuture<NIOAsyncChannel<ByteBuffer, ByteBuffer>> = { channel in
            channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
        }
        let server: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
        switch endpoint {
        case .tcp(let host, let port):
            server = try await bootstrap.bind(host: host, port: port, childChannelInitializer: makeChannel)
        case .unix(let path):
            server = try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true, childChannelInitializer: makeChannel)
        }
        if case .tcp(let host, _) = endpoint, let port = server.channel.localAddress?.port {
            onListening("\(host):\(port)")
        } else {
            onListening(endpoint.description)
        }
        try await withThrowingDiscardingTaskGroup { group in
            try await server.executeThenClose { connections in
                for try await connection in connections {
                    group.addTask { await self.handle(connection) }
                }
            }
        }
    }

    func handle(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>) async {
        let peer = connection.channel.remoteAddress?.description ?? "peer"
        do {
            try await connection.executeThenClose { inbound, outbound in
                let session = Session(server: self, channel: connection.channel, peer: peer)
                let admitted = unauthenticated.withLock { waiting -> Bool in
                    guard waiting.count < maxUnauthenticated else { return false }
                    waiting.insert(ObjectIdentifier(session))
                    return true
                }
                guard admitted else {
                    logger.notice("\(peer): refused: \(maxUnauthenticated) connections are already waiting to authenticate")
                    var line = LineCodec.encode(.error(ErrorMessage(code: .busy, message: "too many connections waiting to authenticate")))
                    line.append(0x0A)
                    try? await outbound.write(ByteBuffer(bytes: line))
                    return
                }
                defer {
                    let none = unauthenticated.withLock { waiting -> Bool in
                        waiting.remove(ObjectIdentifier(session))
                        return waiting.isEmpty
                    }
                    // What a flood of half-open connections made the heap hold goes back.
                    if none && running.withLock({ $0 == nil }) { releaseFreeHeapPages() }
                }
                try await session.run(inbound, outbound)
            }
        } catch {
            logger.info("connection from \(peer) ended: \(error)")
        }
    }
}
