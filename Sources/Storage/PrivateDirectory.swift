import Foundation

/// A directory only this process's user can enter, made new (never one that already existed),
/// removed when the last reference goes.
public final class PrivateDirectory: Sendable {
    public let path: String

    public init(prefix: String = "chebackup") throws {
        var template = Array((NSTemporaryDirectory() + "/\(prefix)-XXXXXX").utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw StorageError(.permanent, "cannot create a private temporary directory: \(String(cString: strerror(errno)))")
        }
        path = String(cString: made)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}
