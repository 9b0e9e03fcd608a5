import Foundation
import Storage

/// The bearer token for each request: a fixed one, or a token file's content, read again when
/// the file changes (kubelet rotates projected service-account tokens by swapping the file).
final class TokenCache: Sendable {
    struct Stamp: Equatable, Sendable {
        var seconds: Int
        var nanoseconds: Int
        var size: Int64
        var inode: UInt64
    }

    let source: KubeConfig.TokenSource?
    private let cached = Locked<(stamp: Stamp, token: String)?>(nil)

    init(_ source: KubeConfig.TokenSource?) { self.source = source }

    /// The token to send now; nil when the configuration has none.
    func current() throws -> String? {
        switch source {
        case nil:
            return nil
        case .fixed(let token):
            return token
        case .file(let path):
            let stamp = try Self.stamp(path)
            if let hit = cached.value, hit.stamp == stamp { return hit.token }
            let data = try KubeConfig.readFile(path, what: "the bearer token")
            let token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard !token.isEmpty else { throw KubeError(.config, "the bearer token file \(path) is empty") }
            cached.withLock { $0 = (stamp, token) }
            return token
        }
    }

    /// The token last sent (to scrub it from any message that might echo it).
    var lastToken: String? {
        switch source {
        case .fixed(let token): return token
        case .file: return cached.value?.token
        case nil: return nil
        }
    }

    static func stamp(_ path: String) throws -> Stamp {
        var info = stat()
        guard stat(path, &info) == 0 else {
            let reason = String(cString: strerror(errno))
            throw KubeError(.config, "the bearer token file \(path): \(reason)")
        }
        #if os(Linux)
        let mtime = info.st_mtim
        #else
        let mtime = info.st_mtimespec
        #endif
        return Stamp(seconds: Int(mtime.tv_sec), nanoseconds: Int(mtime.tv_nsec), size: Int64(info.st_size), inode: UInt64(info.st_ino))
    }
}
