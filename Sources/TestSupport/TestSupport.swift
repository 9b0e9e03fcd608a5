/// TestSupport: fixtures shared by the test targets: temporary directories, data generators and
/// the storage conformance suite every backend runs.
import Foundation

/// A fresh directory under the system temp dir, removed by `remove()`.
public struct TempDir: Sendable {
    public let path: String

    public init(_ prefix: String = "chebackup-test") {
        var template = Array((NSTemporaryDirectory() + "/\(prefix)-XXXXXX").utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public func remove() { try? FileManager.default.removeItem(atPath: path) }

    public func file(_ name: String) -> String { path + "/" + name }
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
public struct SeededBytes {
    var state: UInt64

    public init(seed: UInt64) { state = seed == 0 ? 0x9E3779B97F4A7C15 : seed }

    public mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }

    public mutating func data(_ count: Int) -> Data {
        var out = Data(count: count)
        out.withUnsafeMutableBytes { raw in
            var i = 0
            while i + 8 <= count {
                raw.storeBytes(of: next(), toByteOffset: i, as: UInt64.self)
                i += 8
            }
            while i < count {
                raw[i] = UInt8(truncatingIfNeeded: next())
                i += 1
            }
        }
        return out
    }

    /// Compressible text-like bytes.
    public mutating func text(_ count: Int) -> Data {
        let words = ["che", "workspace", "devfile", "backup", "restore", "postgres", "keycloak", "namespace",
                     "project", "server", "snapshot", "pack", "index", "chunk", "\n"]
        var out = Data(capacity: count + 16)
        while out.count < count {
            out.append(contentsOf: words[Int(next() % UInt64(words.count))].utf8)
            out.append(0x20)
        }
        return out.prefix(count)
    }
}
