import Foundation

/// A storage failure: an opaque code (what callers branch on), a message for people, an optional cause.
public struct StorageError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let raw: String
        private init(_ raw: String) { self.raw = raw }
        public var description: String { raw }

        /// The file does not exist.
        public static let notFound = Code("not found")
        /// The file exists and the backend refuses to replace it.
        public static let alreadyExists = Code("already exists")
        /// The requested range is not inside the file.
        public static let invalidRange = Code("invalid range")
        /// Credentials were refused.
        public static let accessDenied = Code("access denied")
        /// Worth retrying: connection refused or reset, timeout, 5xx, 429.
        public static let transient = Code("transient")
        /// Anything else that will not get better by retrying.
        public static let permanent = Code("permanent")
    }

    public let code: Code
    public let message: String
    public let cause: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var isTransient: Bool { code == .transient }

    public var description: String {
        if let cause { return "\(message): \(cause)" }
        return message
    }
}

/// errno as a storage error, with a message naming the operation and path.
func posixError(_ op: String, _ path: String, errno code: Int32 = errno) -> StorageError {
    let text = String(cString: strerror(code))
    switch code {
    case ENOENT: return StorageError(.notFound, "\(op) \(path): \(text)")
    case EEXIST: return StorageError(.alreadyExists, "\(op) \(path): \(text)")
    case EACCES, EPERM: return StorageError(.accessDenied, "\(op) \(path): \(text)")
    case EINTR, EAGAIN: return StorageError(.transient, "\(op) \(path): \(text)")
    default: return StorageError(.permanent, "\(op) \(path): \(text)")
    }
}
