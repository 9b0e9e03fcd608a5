import CLZ4
import Foundation

/// How a blob's plaintext is stored. The byte values are part of the format: never reuse one.
public enum Codec: UInt8, Sendable, Codable {
    case raw = 0
    case lz4 = 1
}

enum LZ4 {
    /// Compresses `input`; nil when the result would not be smaller (store raw then).
    static func compress(_ input: UnsafeRawBufferPointer) -> Data? {
        guard input.count > 0, input.count < Int(Int32.max) else { return nil }
        let bound = Int(LZ4_compressBound(Int32(input.count)))
        var out = Data(count: bound)
        let written = out.withUnsafeMutableBytes { o in
            chb_lz4_compress(input.baseAddress, o.baseAddress, Int32(input.count), Int32(bound))
        }
        guard written > 0, Int(written) + 5 < input.count else { return nil }  // room for codec and length
        out.count = Int(written)
        return out
    }

    /// Compresses into `output` (at least LZ4_compressBound bytes); returns the length, 0 on failure.
    static func compress(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Int {
        guard input.count > 0, input.count < Int(Int32.max) else { return 0 }
        return Int(chb_lz4_compress(input.baseAddress, output.baseAddress, Int32(input.count), Int32(output.count)))
    }

    /// Decompresses into exactly all of `output`; false when the input is not valid LZ4 of that length.
    static func decompress(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Bool {
        guard output.count < Int(Int32.max), input.count < Int(Int32.max) else { return false }
        if output.isEmpty { return input.count == 1 && input[0] == 0 }
        let n = chb_lz4_decompress(input.baseAddress, output.baseAddress, Int32(input.count), Int32(output.count))
        return n == Int32(output.count)
    }

    /// Decompresses into exactly `length` bytes; nil when the input is not valid LZ4 of that length.
    static func decompress(_ input: UnsafeRawBufferPointer, length: Int) -> Data? {
        guard length >= 0, length < Int(Int32.max), input.count < Int(Int32.max) else { return nil }
        var out = Data(count: length)
        let n = out.withUnsafeMutableBytes { o in
            chb_lz4_decompress(input.baseAddress, o.baseAddress, Int32(input.count), Int32(length))
        }
        return n == Int32(length) ? out : nil
    }
}
