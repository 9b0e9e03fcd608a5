import Foundation
import Storage

/// Content-defined chunking parameters, stored in the repository config: every backup into one
/// repository cuts the same way, so the same content yields the same chunks.
public struct ChunkerParameters: Codable, Sendable, Hashable {
    public var minSize: Int
    public var averageSize: Int
    public var maxSize: Int

    public init(minSize: Int = 256 << 10, averageSize: Int = 1 << 20, maxSize: Int = 4 << 20) {
        self.minSize = minSize
        self.averageSize = averageSize
        self.maxSize = maxSize
    }

    public static let `default` = ChunkerParameters()

    public func validate() throws {
        guard minSize >= 64, minSize < averageSize, averageSize < maxSize, maxSize <= 64 << 20,
              averageSize.nonzeroBitCount == 1, averageSize >= 256 else {
            throw RepositoryError(.invalidArgument,
                                  "invalid chunker sizes min=\(minSize) avg=\(averageSize) max=\(maxSize): need 64 <= min < avg < max <= 64 MiB, avg a power of two")
        }
    }
}

/// FastCDC with normalized chunking: a gear rolling hash, a stricter mask before the average size
/// and a looser one after it, cut points never before `minSize` nor after `maxSize`. The gear table
/// is derived from the repository's id key, so chunk boundaries do not reveal content to someone
/// without the key.
public struct Chunker: Sendable {
    public let parameters: ChunkerParameters
    let gear: [UInt64]
    let maskSmall: UInt64
    let maskLarge: UInt64

    init(parameters: ChunkerParameters, key: SecretKey) {
        self.parameters = parameters
        var table: [UInt64] = []
        table.reserveCapacity(256)
        for byte in 0..<256 {
            var input = Data("chebackup-gear".utf8)
            input.append(UInt8(byte))
            table.append(Crypto.hmac(key, input).w0)
        }
        gear = table
        let bits = parameters.averageSize.trailingZeroBitCount
        func topBits(_ n: Int) -> UInt64 { n >= 64 ? ~0 : ((1 << UInt64(n)) - 1) << UInt64(64 - n) }
        maskSmall = topBits(bits + 2)
        maskLarge = topBits(max(1, bits - 2))
    }

    /// The length of the first chunk of `bytes`. `bytes` holds at least `maxSize` bytes unless
    /// it is the end of the input.
    func cut(_ bytes: UnsafeRawBufferPointer) -> Int {
        let n = min(bytes.count, parameters.maxSize)
        if n <= parameters.minSize { return n }
        let p = bytes.bindMemory(to: UInt8.self)
        return gear.withUnsafeBufferPointer { g -> Int in
            var h: UInt64 = 0
            var i = parameters.minSize
            let normal = min(parameters.averageSize, n)
            while i < normal {
                h = (h << 1) &+ g[Int(p[i])]
                if h & maskSmall == 0 { return i + 1 }
                i += 1
            }
            while i < n {
                h = (h << 1) &+ g[Int(p[i])]
                if h & maskLarge == 0 { return i + 1 }
                i += 1
            }
            return n
        }
    }

    /// Splits an in-memory buffer into chunk lengths (used by tests and small inputs).
    public func split(_ data: Data) -> [Int] {
        data.withUnsafeBytes { raw in
            var lengths: [Int] = []
            var offset = 0
            while offset < raw.count {
                let len = cut(UnsafeRawBufferPointer(rebasing: raw[offset...]))
                lengths.append(len)
                offset += len
            }
            return lengths
        }
    }
}

/// Reads a file descriptor and hands out its chunks, holding at most one maximum-size chunk plus
/// one read (1 MiB).
public final class ChunkReader {
    let chunker: Chunker
    let fd: Int32
    let name: String
    private let buffer: UnsafeMutableRawBufferPointer
    private var start = 0
    private var end = 0
    private var eof = false
    public private(set) var bytesRead: Int64 = 0

    public init(chunker: Chunker, fd: Int32, name: String) {
        self.chunker = chunker
        self.fd = fd
        self.name = name
        buffer = .allocate(byteCount: chunker.parameters.maxSize + min(1 << 20, chunker.parameters.maxSize), alignment: 16)
    }

    deinit { buffer.deallocate() }

    /// The next chunk, or nil at the end of the input.
    public func next() throws -> Data? {
        if end - start < chunker.parameters.maxSize && !eof { try fill() }
        if start == end { return nil }
        let available = UnsafeRawBufferPointer(rebasing: buffer[start..<end])
        let length = chunker.cut(available)
        let chunk = Data(bytes: buffer.baseAddress! + start, count: length)
        start += length
        return chunk
    }

    private func fill() throws {
        if start > 0 {
            let live = end - start
            if live > 0 { memmove(buffer.baseAddress!, buffer.baseAddress! + start, live) }
            start = 0
            end = live
        }
        while end < buffer.count && !eof {
            let n = read(fd, buffer.baseAddress! + end, buffer.count - end)
            if n < 0 {
                if errno == EINTR { continue }
                throw RepositoryError(.sourceUnreadable, "read \(name): \(String(cString: strerror(errno)))")
            }
            if n == 0 { eof = true }
            end += n
            bytesRead += Int64(n)
        }
    }
}
