import Foundation
import LineProtocol
import Logging
import NIOCore
import Repository
import Storage
import Subprocess
import Synchronization

/// One connection: hello, authentication, then requests. Everything the peer sends that does
/// not fit gets an error line; before authentication, an error also ends the connection.
final class Session: Sendable {
    let server: AgentServer
    let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    let peer: String
    let agentNonce = SharedToken.newNonce()
    let key = Mutex<SessionKey?>(nil)
    /// Requests this connection started, cancelled when it goes away.
    let started = Mutex<Set<String>>([])

    init(server: AgentServer, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>, peer: String) {
        self.server = server
        self.outbound = outbound
        self.peer = peer
    }

    var logger: Logger { server.logger }

    func send(_ message: Message) async {
        var line = LineCodec.encode(message)
        line.append(0x0A)
        do { try await outbound.write(ByteBuffer(bytes: line)) } catch {
            logger.info("cannot write to \(peer): \(error)")
        }
    }

    func sendError(_ id: String?, _ code: ErrorCode, _ message: String) async {
        logger.notice("\(peer): \(code.rawValue): \(message)")
        await send(.error(ErrorMessage(id: id, code: code, message: message)))
    }

    func run(_ inbound: NIOAsyncChannelInboundStream<ByteBuffer>) async throws {
        await send(.hello(Hello(protocols: supportedProtocolVersions, role: server.role.name, agentVersion: programVersion,
                                installationId: server.installationID, capabilities: ["backup", "restore", "status", "cancel", "ping"],
                                nonce: agentNonce.base64EncodedString())))
        var framer = LineFramer(maxLineLength: server.maxLineLength)
        defer { cancelOwnRequests() }
        for try await buffer in inbound {
            for item in framer.feed(buffer.readableBytesView) {
                let authenticated = key.withLock { $0 != nil }
                switch item {
                case .tooLong(let n):
                    await sendError(nil, .lineTooLong, "line of \(n) bytes is longer than \(server.maxLineLength)")
                    if !authenticated { return }
                case .line(let line):
                    if line.isEmpty { continue }
                    switch LineCodec.decode(line) {
                    case .failure(let error):
                        await sendError(error.id, ErrorCode(rawValue: error.code) ?? .invalidRequest, error.message)
                        if !authenticated { return }
                    case .success(let message):
                        if !(await handle(message, authenticated: authenticated)) { return }
                    }
                }
            }
        }
    }

    /// Handles one message; false ends the connection.
    func handle(_ message: Message, authenticated: Bool) async -> Bool {
        guard authenticated else {
            guard case .auth(let auth) = message else {
                await sendError(message.id, .outOfOrder, "authenticate first: expected an auth message, got \(message.type)")
                return false
            }
            guard negotiateVersion(offered: [auth.protocol]) != nil else {
                await sendError(nil, .unsupportedVersion, "protocol version \(auth.protocol) is not supported (this agent speaks \(supportedProtocolVersions))")
                return false
            }
            guard let controllerNonce = Data(base64Encoded: auth.nonce), controllerNonce.count == 32,
                  let proof = Data(base64Encoded: auth.proof),
                  Primitives.constantTimeEqual(proof, server.token.controllerProof(agentNonce: agentNonce, controllerNonce: controllerNonce)) else {
                await sendError(nil, .unauthorized, "authentication failed")
                return false
            }
            key.withLock { $0 = server.token.sessionKey(agentNonce: agentNonce, controllerNonce: controllerNonce) }
            let agentProof = server.token.agentProof(agentNonce: agentNonce, controllerNonce: controllerNonce)
            await send(.welcome(Welcome(proof: agentProof.base64EncodedString())))
            logger.info("controller at \(peer) authenticated")
            return true
        }
        switch message {
        case .ping(let m):
            await send(.result(ResultMessage(id: m.id, state: "pong")))
        case .status(let m):
            let current = server.running.withLock { $0?.id }
            await send(.result(ResultMessage(id: m.id, state: current == nil ? "idle" : "busy", running: current)))
        case .cancel(let m):
            let task = server.running.withLock { $0?.id == m.target ? $0?.task : nil } ?? nil
            guard let task else {
                await sendError(m.id, .unknownRequest, "no running request \(m.target)")
                return true
            }
            task.cancel()
            await send(.result(ResultMessage(id: m.id, state: "cancelling", running: m.target)))
        case .backup(let m):
            await start(id: m.id, repository: m.repository) { repo, progress, stage in
                let parts = try await self.server.role.backup(repo, parts: m.parts, progress: progress, stage: stage)
                return ResultMessage(id: m.id, parts: parts)
            }
        case .restore(let m):
            await start(id: m.id, repository: m.repository) { repo, progress, stage in
                let (_, snapshot) = try await repo.resolveSnapshot(m.snapshot)
                let restored = try await self.server.role.restore(repo, snapshot: snapshot, parts: m.parts,
                                                                   keepExtraneous: m.keepExtraneous ?? false, rewrite: m.rewrite ?? [],
                                                                   progress: progress, stage: stage)
                return ResultMessage(id: m.id, restored: restored)
            }
        case .hello, .auth, .welcome, .event, .result, .error:
            await sendError(message.id, .outOfOrder, "\(message.type) is not a request")
        }
        return true
    }

    typealias Work = @Sendable (Repository, ProgressCounters, @escaping @Sendable (String) -> Void) async throws -> ResultMessage

    /// Starts a backup or restore unless one runs; streams stage and progress events; ends with
    /// a result or an error.
    func start(id: String, repository: RepositorySpec, work: @escaping Work) async {
        guard let key = key.withLock({ $0 }) else { return }
        let secrets: RepositorySecrets
        do { secrets = try key.open(repository.secrets, requestID: id) } catch let error as ErrorMessage {
            await sendError(id, .invalidRequest, error.message)
            return
        } catch { return }
        // Reserve the agent first: a request turned away as busy never starts anything.
        let reserved = server.running.withLock { current -> String? in
            if let current { return current.id }
            current = (id, nil)
            return nil
        }
        if let other = reserved {
            await sendError(id, .busy, "another backup or restore is running (\(other))")
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
                    await self.send(.event(Event(id: id, stage: stage.value, bytes: progress.bytesDone,
                                                 items: progress.itemsDone, totalBytes: progress.bytesTotal)))
                }
            }
            let setStage: @Sendable (String) -> Void = { text in
                stage.withLock { $0 = text }
                Task { await self.send(.event(Event(id: id, stage: text, bytes: progress.bytesDone, items: progress.itemsDone,
                                                   totalBytes: progress.bytesTotal))) }
            }
            let final: Message
            do {
                let repo = try await self.open(repository.url, secrets: secrets)
                final = .result(try await work(repo, progress, setStage))
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
            // Sent from a task of its own: a cancelled task's writes would be dropped.
            await Task {
                if case .error(let e) = final { self.logger.notice("\(self.peer): \(e.code): \(e.message)") }
                await self.send(final)
            }.value
        }
        server.running.withLock { if $0?.id == id { $0 = (id, task) } }
    }

    func open(_ url: String, secrets: RepositorySecrets) async throws -> Repository {
        let parsed: RepositoryURL
        do { parsed = try RepositoryURL.parse(url) } catch {
            throw RepositoryError(.invalidArgument, "invalid repository URL: \(error)")
        }
        let credentials = try secrets.backendCredentials(filesIn: NSTemporaryDirectory() + "/chebackup-agent-\(getpid())")
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
