import AgentClient
import Foundation
import LineProtocol
import Repository
import Storage

/// A failure of the engine or a driver: an opaque code, a message for people, an optional cause.
public struct ControllerError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let raw: String
        private init(_ raw: String) { self.raw = raw }
        public var description: String { raw }

        /// A resource, secret or key that is named but does not exist.
        public static let notFound = Code("not found")
        /// A resource whose content is not acceptable.
        public static let invalidResource = Code("invalid resource")
        /// An agent of a role is missing or not ready.
        public static let agentUnavailable = Code("agent unavailable")
        /// Che's server did not become ready in time.
        public static let cheNotReady = Code("che not ready")
        /// The user declined or the configuration forbids the operation.
        public static let refused = Code("refused")
        /// The mode's backing store (files, API server) failed.
        public static let store = Code("store")
    }

    public let code: Code
    public let message: String
    public let cause: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String { message }
}

/// One sentence for any error the engine meets: what status messages and the command line show.
public func describe(_ error: any Error) -> String {
    switch error {
    case let e as ControllerError: e.message
    case let e as RepositoryError: e.message
    case let e as StorageError: e.description
    case let e as AgentError: e.message
    case let e as ErrorMessage: e.message
    case let e as any CustomStringConvertible: e.description
    default: "\(error)"
    }
}
