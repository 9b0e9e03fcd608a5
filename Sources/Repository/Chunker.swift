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
                                  "invalid chunker sizes min=\(minSize) avg=\(averageSize) max=\(maxSize): need 64 <= min < avg < max <= 64 MiB, avg a power of two of at least 256")
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
            if let cut = Self.scan(p, g, &h, &i, to: normal, mask: maskSmall) { return cut }
            return Self.scan(p, g, &h, &i, to: n, mask: maskLarge) ?? n
        }
    }

    /// Rolls the gear hash over `p[i..<end]`; the length up to the first position whose hash
    /// has none of `mask`'s bits, or nil (then `h` and `i` are where it stopped). Two bytes per
    /// step: the hash after both is `h << 2 + (g[a] << 1 + g[b])`, equal to rolling one byte
    /// after the other (shifting distributes over wrapping addition), so the cut points are the
    /// same, but the step depends on the previous one by one shift and one add instead of two
    /// of each (about 1.5x faster); the hash after the first byte is checked off that chain.
    @inline(__always)
    static func scan(_ p: UnsafeBufferPointer<UInt8>, _ g: UnsafeBufferPointer<UInt64>, _ h: inout UInt64,
                     _ i: inout Int, to end: Int, mask: UInt64) -> Int? {
        var hash = h
        var at = i
        defer { (h, i) = (hash, at) }
        while at + 1 < end {
            let a = g[Int(p[at])], b = g[Int(p[at + 1])]
            if ((hash << 1) &+ a) & mask == 0 {
                hash = (hash << 1) &+ a
                at += 1
                return at
            }
            hash = (hash << 2) &+ ((a << 1) &+ b)
            at += 2
            if hash & mask == 0 { return at }
        }
        if at < end {
            hash = (hash << 1) &+ g[Int(p[at])]
            at += 1
            if hash & mask == 0 { return at }
        }
        return nil
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
/// one read (1 MiB). With pools, the read buffer and the chunks come from reusable memory (a
/// backup reads thousands of files: fresh buffers would be mapped and faulted in for each).
public final class ChunkReader {
    let chunker: Chunker
    let fd: Int32
    let name: String
    private let buffer: UnsafeMutableRawBufferPointer
    private let pools: ChunkPools?
    private var start = 0
    private var end = 0
    private var eof = false
    public private(set) var bytesRead: Int64 = 0

    public init(chunker: Chunker, fd: Int32, name: String, pools: ChunkPools? = nil) {
        self.chunker = chunker
        self.fd = fd
        self.name = name
        self.pools = pools
        buffer = pools?.reads.take() ?? .allocate(byteCount: ChunkPools.readBufferSize(chunker.parameters), alignment: 64)
    }

    deinit {
        if let pools { pools.reads.give(buffer) } else { buffer.deallocate() }
    }

    /// The next chunk, or nil at the end of the input: a view into the read buffer, valid until
    /// the next call.
    public func next() throws -> UnsafeRawBufferPointer? {
        if end - start < chunker.parameters.maxSize && !eof { try fill() }
        if start == end { return nil }
        let length = chunker.cut(UnsafeRawBufferPointer(rebasing: buffer[start..<end]))
        defer { start += length }
        return UnsafeRawBufferPointer(rebasing: buffer[start..<(start + length)])
    }

    /// A copy of a chunk from `next` that outlives it (in pooled memory when there are pools).
    public func copy(_ chunk: UnsafeRawBufferPointer) -> Data {
        guard let pools else { return Data(chunk) }
        return pools.chunks.data(count: chunk.count) { $0.baseAddress!.copyMemory(from: chunk.baseAddress!, byteCount: chunk.count) }
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

/// Reusable buffers for `ChunkReader`s: one read buffer per file being read, and the chunks in
/// flight (at most a maximum-size chunk each).
public final class ChunkPools: Sendable {
    let reads: BufferPool
    let chunks: BufferPool

    static func readBufferSize(_ p: ChunkerParameters) -> Int { p.maxSize + min(1 << 20, p.maxSize) }

    public init(parameters: ChunkerParameters, readers: Int, chunksInFlight: Int) {
        reads = BufferPool(capacity: Self.readBufferSize(parameters), keep: readers)
        chunks = BufferPool(capacity: parameters.maxSize, keep: chunksInFlight)
    }
}
