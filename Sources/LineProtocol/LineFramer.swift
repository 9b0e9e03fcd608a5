/// LineProtocol: the control protocol between the controller and the agents (protocol.md):
/// line framing with a size limit, the message types, and the authenticated handshake. It does
/// no I/O: callers feed bytes in and write the lines it gives them.
import Foundation

/// Splits a byte stream into `\n`-terminated lines of at most `maxLineLength` bytes. A longer
/// line is reported once as `.tooLong` and its bytes are dropped up to the next newline, so
/// memory stays bounded whatever the peer sends. A trailing `\r` is removed.
public struct LineFramer: Sendable {
    public enum Item: Equatable, Sendable {
        case line(Data)
        case tooLong(Int)
    }

    public let maxLineLength: Int
    private var buffer = Data()
    private var discarding = false
    private var discarded = 0

    public init(maxLineLength: Int = 1 << 20) {
        self.maxLineLength = maxLineLength
    }

    /// Feeds bytes; returns the complete lines (and oversize reports) they finish.
    public mutating func feed<Bytes: Sequence>(_ bytes: Bytes) -> [Item] where Bytes.Element == UInt8 {
        var items: [Item] = []
        for byte in bytes {
            if byte == 0x0A {
                if discarding {
                    items.append(.tooLong(discarded))
                    discarding = false
                    discarded = 0
                } else {
                    var line = buffer
                    if line.last == 0x0D { line.removeLast() }
                    items.append(.line(line))
                }
                buffer.removeAll(keepingCapacity: buffer.count < 64 << 10)
                continue
            }
            if discarding {
                discarded += 1
                continue
            }
            if buffer.count >= maxLineLength {
                discarding = true
                discarded = buffer.count + 1
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
