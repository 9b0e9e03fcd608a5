import Foundation
import LineProtocol
import Logging
import NIOCore
import Repository
import Storage
import Subprocess
import Synchronization

/// One connection: hello, authentication, then requests. Everything the peer sends that does
/// not fit gets an error line; before authentication, an error also ends the connection, and
/// after it every line must verify (protocol v2) or the connection ends.
final class Session: Sendable {
    let server: AgentServer
    let channel: any Channel
    let peer: String
    let agentNonce = SharedToken.newNonce()
    /// Every line this session sends, in order (sealed after `welcome`).
    let out = OutboundLines()
    /// Set by a successful `auth`: the key that opens sealed secrets and the controller's lines.
    let keys = Mutex<(sealing: SessionKey, opener: LineOpener)?>(nil)
    /// Requests this connection started, cancelled when it goes away.
    let started = Mutex<Set<String>>([])

    init(server: AgentServer, channel: any Channel, peer: String) {
        self.server = server
        self.channel = channel
        self.peer = peer
    }

    var logger: Logger { server.logger }

    func send(_ message: Message) { out.send(message) }

    func sendError(_ id: String?, _ code: ErrorCode, _ message: String) {
        logger.notice("\(peer): \(code.rawValue): \(message)")
        send(.error(ErrorMessage(id: id, code: code, message: message)))
    }

    var authenticated: Bool { keys.withLock { $0 != nil } }

    /// Runs the connection: a writer drains `out` while the lines the controller sends are read
    /// and answered. Ends when the controller closes, or when this side ends the connection
    /// (a failed handshake, a line that does not verify); queued lines are flushed first.
    func run(_ inbound: NIOAsyncChannelInboundStream<ByteBuffer>, _ outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) async throws {
        let writer = Task {
            for await line in out.lines { try await outbound.write(ByteBuffer(bytes: line)) }
        }
        // A controller that does not authenticate in time loses the connection.
        let deadline = Task { [channel, peer, logger, handshakeTimeout = server.handshakeTimeout] in
            try await Task.sleep(for: handshakeTimeout)
            if !self.authenticated {
                logger.notice("\(peer): no authentication within \(handshakeTimeout): closing the connection")
                channel.close(promise: nil)
            }
        }
        defer {
            deadline.cancel()
            cancelOwnRequests()
        }
        send(.hello(hello))
        do { try await read(inbound) } catch {
            logger.info("reading from \(peer): \(error)")
        }
        out.finish()
        // Flush what is queued, but never wait long for a peer that stopped reading.
        await withTaskGroup(of: Void.self) { group in
            group.addTask { _ = await writer.result }
            group.addTask {
                try? await Task.sleep(for: .seconds(5))
                writer.cancel()
            }
            await group.next()
            group.cancelAll()
        }
    }

    var hello: Hello {
        Hello(protocols: supportedProtocolVersions, role: server.role.name, agentVersion: programVersion,
              installationId: server.installationID, capabilities: ["backup", "restore", "status", "cancel", "ping"],
              nonce: agentNonce.base64EncodedString())
    }

    func read(_ inbound: NIOAsyncChannelInboundStream<ByteBuffer>) async throws {
        // Before authentication only a short `auth` line is acceptable: anything longer is cut
        // at this limit, so an unauthenticated peer can make the agent hold very little.
        var framer = LineFramer(maxLineLength: min(server.maxLineLength, AgentServer.handshakeLineLimit))
        for try await buffer in inbound {
            for item in framer.feed(buffer.readableBytesView) {
                guard authenticated else {
                    switch item {
                    case .tooLong:
                        sendError(nil, .lineTooLong, "a line longer than \(framer.maxLineLength) bytes before authentication")
                        return
                    case .line(let line):
                        if line.isEmpty { continue }
                        switch LineCodec.decode(line) {
                        case .failure(let error):
                            sendError(error.id, ErrorCode(rawValue: error.code) ?? .invalidRequest, error.message)
                            return
                        case .success(let message):
                            guard authenticate(message) else { return }
                            framer.maxLineLength = server.maxLineLength
                        }
                    }
                    continue
                }
                if case .line(let line) = item, line.isEmpty { continue }  // empty lines are ignored, and use no number
                let opened: LineOpener.Opened = keys.withLock { k in
                    switch item {
                    case .tooLong(let n): return .tampered(k!.opener.tooLong(n, limit: framer.maxLineLength))
                    case .line(let line): return k!.opener.open(line)
                    }
                }
                switch opened {
                case .tampered(let why):
                    sendError(nil, .tampered, why)
                    return
                case .invalid(let error):
                    sendError(error.id, ErrorCode(rawValue: error.code) ?? .invalidRequest, error.message)
                case .message(let message):
                    await handle(message)
                }
            }
        }
    }

    /// Checks the controller's `auth`; on success answers `welcome` and seals every later line.
    /// False ends the connection.
    func authenticate(_ message: Message) -> Bool {
        guard case .auth(let auth) = message else {
            sendError(message.id, .outOfOrder, "authenticate first: expected an auth message, got \(message.type)")
            return false
        }
        guard let version = negotiateVersion(offered: [auth.protocol]) else {
            sendError(nil, .unsupportedVersion, "protocol version \(auth.protocol) is not supported (this agent speaks \(supportedProtocolVersions))")
            return false
        }
        let helloLine = LineCodec.encode(.hello(hello))
        guard let controllerNonce = Data(base64Encoded: auth.nonce), controllerNonce.count == 32,
              let proof = Data(base64Encoded: auth.proof),
              Primitives.constantTimeEqual(proof, server.token.controllerProof(agentNonce: agentNonce, controllerNonce: controllerNonce,
                                                                               hello: helloLine, version: version)) else {
            sendError(nil, .unauthorized, "authentication failed")
            return false
        }
        let sessionKeys = server.token.sessionKeys(agentNonce: agentNonce, controllerNonce: controllerNonce)
        let (sealer, opener) = sessionKeys.agentSide
        keys.withLock { $0 = (sessionKeys.sealing, opener) }
        server.authenticated(self)
        let agentProof = server.token.agentProof(agentNonce: agentNonce, controllerNonce: controllerNonce, hello: helloLine, version: version)
        send(.welcome(Welcome(proof: agentProof.base64EncodedString())))
        out.startSealing(sealer)
        logger.info("controller at \(peer) authenticated")
        return true
    }

    /// Handles one authentic message.
    func handle(_ message: Message) async {
        switch message {
        case .ping(let m):
            send(.result(ResultMessage(id: m.id, state: "pong")))
        case .status(let m):
            let current = server.running.withLock { $0?.id }
            send(.result(ResultMessage(id: m.id, state: current == nil ? "idle" : "busy", running: current)))
        case .cancel(let m):
            let task = server.running.withLock { $0?.id == m.target ? $0?.task : nil } ?? nil
            guard let task else {
                sendError(m.id, .unknownRequest, "no running request \(m.target)")
                return
            }
            task.cancel()
            send(.result(ResultMessage(id: m.id, state: "cancelling", running: m.target)))
        case .backup(let m):
            start(id: m.id, repository: m.repository) { repo, progress, stage in
                // A shared lock, beside the controller's: a prune cannot start meanwhile.
                try await repo.withLock(exclusive: false, operation: "backup (\(self.server.role.name) agent)", retry: .seconds(600)) { _ in
                    let parts = try await self.server.role.backup(repo, parts: m.parts, installation: m.installation, progress: progress, stage: stage)
                    return ResultMessage(id: m.id, parts: parts)
                }
            }
        case .restore(let m):
            if let bad = m.rewrite?.lazy.compactMap({ $0.problem }).first {
                sendError(m.id, .invalidRequest, bad)
                return
            }
            start(id: m.id, repository: m.repository) { repo, progress, stage in
                try await repo.withLock(exclusive: false, operation: "restore (\(self.server.role.name) agent)", retry: .seconds(600)) { _ in
                    let (_, snapshot) = try await repo.resolveSnapshot(m.snapshot)
                    let restored = try await self.server.role.restore(repo, snapshot: snapshot, parts: m.parts,
                                                                       keepExtraneous: m.keepExtraneous ?? false, rewrite: m.rewrite ?? [],
                                                                       progress: progress, stage: stage)
                    return ResultMessage(id: m.id, restored: restored)
                }
            }
        case .hello, .auth, .welcome, .event, .result, .error:
            sendError(message.id, .outOfOrder, "\(message.type) is not a request")
        }
    }

    typealias Work = @Sendable (Repository, ProgressCounters, @escaping @Sendable (String) -> Void) async throws -> ResultMessage

    /// Starts a backup or restore unless one runs; streams stage and progress events; ends with
    /// a result or an error.
    func start(id: String, repository: RepositorySpec, work: @escaping Work) {
        guard let key = keys.withLock({ $0?.sealing }) else { return }
        let secrets: RepositorySecrets
        do { secrets = try key.open(repository.secrets, requestID: id) } catch let error as ErrorMessage {
            sendError(id, .invalidRequest, error.message)
            return
        } catch { return }
        // Reserve the agent first: a request turned away as busy never starts anything.
        let reserved = server.running.withLock { current -> String? in
            if let current { return current.id }
            current = (id, nil)
            return nil
        }
        if let other = reserved {
            sendError(id, .busy, "another backup or restore is running (\(other))")
            return
        }
        started.withLock { _ = $0.insert(id) }
        let progress = ProgressCounters()
        let stage = Locked("opening the repository")
        let task = Task {
            let ticker = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    if Task.isCancelled { break }
                    self.send(.event(Event(id: id, stage: stage.value, bytes: progress.bytesDone,
                                           items: progress.itemsDone, totalBytes: progress.bytesTotal)))
                }
            }
            let setStage: @Sendable (String) -> Void = { text in
                stage.withLock { $0 = text }
                // Queued at once, in order: never after the request's final message.
                self.send(.event(Event(id: id, stage: text, bytes: progress.bytesDone, items: progress.itemsDone,
                                       totalBytes: progress.bytesTotal)))
            }
            let final: Message
            do {
                // Credential files (known hosts, a CA) live in a directory made new for this request.
                let files = try PrivateDirectory(prefix: "chebackup-agent")
                let repo = try await self.open(repository.url, secrets: secrets, files: files)
                final = .result(try await work(repo, progress, setStage))
                withExtendedLifetime(files) {}
            } catch {
                if Task.isCancelled {
                    final = .error(ErrorMessage(id: id, code: .cancelled, message: "request \(id) was cancelled"))
                } else {
                    let (code, text) = Self.describe(error)
                    final = .error(ErrorMessage(id: id, code: code, message: text))
                }
            }
            ticker.cancel()
            self.server.running.withLock { if $0?.id == id { $0 = nil } }
            self.started.withLock { _ = $0.remove(id) }
            if case .error(let e) = final { self.logger.notice("\(self.peer): \(e.code): \(e.message)") }
            self.send(final)
        }
        server.running.withLock { if $0?.id == id { $0 = (id, task) } }
    }

    func open(_ url: String, secrets: RepositorySecrets, files: PrivateDirectory) async throws -> Repository {
        let parsed: RepositoryURL
        do { parsed = try RepositoryURL.parse(url) } catch {
            throw RepositoryError(.invalidArgument, "invalid repository URL: \(error)")
        }
        let credentials = try secrets.backendCredentials(filesIn: files)
        let storage = try StorageStack.open(parsed, credentials: credentials, pool: server.pool, logger: logger)
        return try await Repository.open(storage: storage, password: secrets.repositoryPassword, logger: logger)
    }

    static func describe(_ error: any Error) -> (ErrorCode, String) {
        switch error {
        case let e as RepositoryError:
            switch e.code {
            case .sourceUnreadable: return (.sourceFailed, e.message)
            case .io: return (.restoreFailed, e.message)
            default: return (.repository, e.message)
            }
        case let e as StorageError: return (.repository, e.description)
        case let e as SubprocessError: return (.sourceFailed, e.message)
        case let e as ErrorMessage: return (ErrorCode(rawValue: e.code) ?? .internalError, e.message)
        default: return (.internalError, "\(error)")
        }
    }

    func cancelOwnRequests() {
        let mine = started.withLock { $0 }
        server.running.withLock { current in
            if let current, mine.contains(current.id) {
                logger.notice("controller at \(peer) went away: cancelling \(current.id)")
                current.task?.cancel()
            }
        }
    }
}
