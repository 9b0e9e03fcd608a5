import Foundation
import Repository
import Synchronization

/// One authenticated line (protocol v2): the message's own JSON line as the string `msg`, its
/// sequence number in this direction (0 for the first line after `welcome`) and
/// `mac = base64(HMAC-SHA256(direction key, be64(seq) ‖ UTF-8 bytes of msg))`.
struct Envelope: Codable {
    var seq: UInt64
    var msg: String
    var mac: String

    static func mac(key: Data, seq: UInt64, msg: Data) -> Data {
        var s = seq.bigEndian
        return Primitives.hmacSHA256(key: key, Data(bytes: &s, count: 8) + msg)
    }
}

/// Seals the lines one end sends after `welcome`, numbering them from 0.
public struct LineSealer: Sendable {
    let key: Data
    public private(set) var next: UInt64 = 0

    init(key: Data) { self.key = key }

    /// The envelope line (no newline) for `message`.
    public mutating func seal(_ message: Message) -> Data {
        let msg = LineCodec.encode(message)
        let envelope = Envelope(seq: next, msg: String(decoding: msg, as: UTF8.self),
                                mac: Envelope.mac(key: key, seq: next, msg: msg).base64EncodedString())
        next += 1
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(envelope)) ?? Data()
    }
}

/// Checks the lines the other end sends after `welcome`: each must be an envelope with the next
/// sequence number and a MAC that verifies. Anything else means the connection was changed in
/// transit (a line altered, dropped, replayed, reordered or injected) and must be closed.
public struct LineOpener: Sendable {
    let key: Data
    /// Who sends the lines this opener checks, for messages ("agent", "controller").
    let peer: String
    public private(set) var next: UInt64 = 0
    /// Set by the first failure: every later line fails too.
    private var broken = false

    init(key: Data, peer: String) {
        self.key = key
        self.peer = peer
    }

    public enum Opened: Sendable, Equatable {
        /// An authentic message.
        case message(Message)
        /// An authentic line whose message is malformed: answer with this error and read on.
        case invalid(ErrorMessage)
        /// Not authentic: end the connection with this one-line reason.
        case tampered(String)
    }

    public mutating func open(_ line: Data) -> Opened {
        let expected = next
        func fail(_ why: String) -> Opened {
            broken = true
            return .tampered("line \(expected) from the \(peer) \(why): the connection was changed in transit, closing it")
        }
        if broken { return fail("follows a line that failed its integrity check") }
        guard let envelope = try? JSONDecoder().decode(Envelope.self, from: line) else {
            return fail("is not an authenticated envelope")
        }
        let msg = Data(envelope.msg.utf8)
        guard let mac = Data(base64Encoded: envelope.mac),
              Primitives.constantTimeEqual(mac, Envelope.mac(key: key, seq: envelope.seq, msg: msg)) else {
            return fail("failed its integrity check (wrong MAC)")
        }
        guard envelope.seq == expected else {
            return fail(envelope.seq < expected ? "is a replay (sequence number \(envelope.seq), expected \(expected))"
                                                : "came out of order: \(envelope.seq - expected) line(s) before it are missing (sequence number \(envelope.seq), expected \(expected))")
        }
        next += 1
        switch LineCodec.decode(msg) {
        case .success(let message): return .message(message)
        case .failure(let error): return .invalid(error)
        }
    }

    /// The reason to give for a line longer than the limit: it cannot be checked, so it ends the
    /// connection like any other line that does not verify.
    public mutating func tooLong(_ length: Int, limit: Int) -> String {
        broken = true
        return "line \(next) from the \(peer) is \(length) bytes, longer than the limit of \(limit), and cannot be authenticated: closing the connection"
    }
}

/// The lines one end sends, in one order: each message is numbered and sealed when it is
/// queued, so concurrent senders can never put the sequence numbers out of order on the wire.
/// Before `startSealing` (the handshake) messages go out as plain lines. Once a request's final
/// message (its `result` or `error`) is queued, events about that request are dropped: nothing
/// about a request follows its final answer (protocol.md, ordering invariants).
public final class OutboundLines: Sendable {
    struct State {
        var sealer: LineSealer?
        var finished: Set<String> = []
        var closed = false
    }
    private let state = Mutex(State())
    private let continuation: AsyncStream<Data>.Continuation
    /// The lines to write, each with its newline, in order.
    public let lines: AsyncStream<Data>

    public init() {
        (lines, continuation) = AsyncStream<Data>.makeStream()
    }

    public func startSealing(_ sealer: LineSealer) {
        state.withLock { $0.sealer = sealer }
    }

    /// Queues `message`; false if it was dropped (an event after its request's final answer, or
    /// the queue is closed).
    @discardableResult
    public func send(_ message: Message) -> Bool {
        state.withLock { s in
            guard !s.closed else { return false }
            switch message {
            case .event(let e) where s.finished.contains(e.id):
                return false
            case .result(let r):
                s.finished.insert(r.id)
            case .error(let e):
                if let id = e.id { s.finished.insert(id) }
            default:
                break
            }
            var line = s.sealer != nil ? s.sealer!.seal(message) : LineCodec.encode(message)
            line.append(0x0A)
            continuation.yield(line)
            return true
        }
    }

    /// No more lines: the writer ends after the ones queued.
    public func finish() {
        state.withLock { $0.closed = true }
        continuation.finish()
    }
}
