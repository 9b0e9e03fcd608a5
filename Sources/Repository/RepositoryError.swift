import Foundation

/// A repository failure: an opaque code, a one-line message naming the problem, an optional cause.
public struct RepositoryError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let raw: String
        private init(_ raw: String) { self.raw = raw }
        public var description: String { raw }

        public static let wrongPassword = Code("wrong password")
        public static let notARepository = Code("not a repository")
        public static let alreadyInitialized = Code("already initialized")
        public static let corrupted = Code("corrupted")
        public static let missing = Code("missing")
        public static let snapshotNotFound = Code("snapshot not found")
        public static let ambiguousSnapshot = Code("ambiguous snapshot")
        public static let unsupported = Code("unsupported")
        public static let sourceUnreadable = Code("source unreadable")
        public static let invalidArgument = Code("invalid argument")
        public static let io = Code("i/o")
        /// Another process holds a conflicting repository lock.
        public static let locked = Code("locked")
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
