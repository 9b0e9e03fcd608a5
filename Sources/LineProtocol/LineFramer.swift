/// LineProtocol: the control protocol between the controller and the agents (protocol.md):
/// line framing with a size limit, the message types, and the authenticated handshake. It does
/// no I/O: callers feed bytes in and write the lines it gives them.
import Foundation

/// Splits a byte stream into `\n`-terminated lines of at most `maxLineLength` bytes. A longer
/// line is reported once, as soon as it passes the limit (`.tooLong(maxLineLength + 1)`: the peer
/// need not ever end it), and its bytes are dropped up to the next newline, so memory stays
/// bounded whatever the peer sends. A trailing `\r` is removed.
public struct LineFramer: Sendable {
    public enum Item: Equatable, Sendable {
        case line(Data)
        case tooLong(Int)
    }

    /// May change between feeds (the agent allows longer lines once the peer authenticated).
    public var maxLineLength: Int
    private var buffer = Data()
    private var discarding = false

    public init(maxLineLength: Int = 1 << 20) {
        self.maxLineLength = maxLineLength
    }

    /// Feeds bytes; returns the complete lines (and oversize reports) they finish.
    public mutating func feed<Bytes: Sequence>(_ bytes: Bytes) -> [Item] where Bytes.Element == UInt8 {
        var items: [Item] = []
        for byte in bytes {
            if byte == 0x0A {
                if discarding {
                    discarding = false
                } else {
                    var line = buffer
                    if line.last == 0x0D { line.removeLast() }
                    items.append(.line(line))
                }
                buffer.removeAll(keepingCapacity: buffer.count < 64 << 10)
                continue
            }
            if discarding { continue }
            if buffer.count >= maxLineLength {
                items.append(.tooLong(buffer.count + 1))
                discarding = true
                buffer = Data()
                continue
            }
            buffer.append(byte)
        }
        return items
    }

    /// Bytes of an unfinished line held now (never more than `maxLineLength`).
    public var pending: Int { buffer.count }
}
