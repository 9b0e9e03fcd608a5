import Foundation
import KubernetesAPI

/// A JSON Pointer (RFC 6901): reference tokens, written `/a/b~1c` (`~0` for `~`, `~1` for `/`).
public struct JSONPointer: Sendable, Hashable, CustomStringConvertible {
    public var tokens: [String]

    public init(_ tokens: [String] = []) { self.tokens = tokens }

    /// Parses `/a/b~1c`; the empty string is the whole document.
    public init(parsing text: String) throws {
        guard !text.isEmpty else { self.tokens = []; return }
        guard text.hasPrefix("/") else { throw InjectionError("JSON pointer \(text) does not start with /") }
        tokens = text.dropFirst().split(separator: "/", omittingEmptySubsequences: false).map {
            $0.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
        }
    }

    public var description: String {
        tokens.map { "/" + $0.replacingOccurrences(of: "~", with: "~0").replacingOccurrences(of: "/", with: "~1") }.joined()
    }

    public func appending(_ token: String) -> JSONPointer { JSONPointer(tokens + [token]) }
    public static func + (lhs: JSONPointer, rhs: JSONPointer) -> JSONPointer { JSONPointer(lhs.tokens + rhs.tokens) }
}

/// One RFC 6902 operation. Injection only adds, so `add` is the one operation applied here.
public struct PatchOperation: Sendable, Hashable {
    public var op: String
    public var path: JSONPointer
    public var value: JSON

    public static func add(_ path: JSONPointer, _ value: JSON) -> PatchOperation {
        PatchOperation(op: "add", path: path, value: value)
    }

    public var json: JSON { ["op": .string(op), "path": .string(path.description), "value": value] }

    /// The operation with its path moved under `prefix` (a pod's operations for a pod template).
    public func under(_ prefix: JSONPointer) -> PatchOperation {
        PatchOperation(op: op, path: prefix + path, value: value)
    }
}

public enum JSONPatch {
    /// The patch document: a JSON array of operations.
    public static func document(_ operations: [PatchOperation]) throws -> Data {
        try JSON.array(operations.map(\.json)).data(sorted: true)
    }

    /// Applies `add` operations as RFC 6902 says: into an object a member is set, into an array
    /// the value is inserted at the index (`-` appends); the parent must exist.
    public static func apply(_ operations: [PatchOperation], to document: JSON) throws -> JSON {
        var result = document
        for operation in operations {
            guard operation.op == "add" else { throw InjectionError("unsupported patch operation \(operation.op)") }
            try add(operation.value, at: operation.path.tokens[...], in: &result, path: operation.path)
        }
        return result
    }

    private static func add(_ value: JSON, at tokens: ArraySlice<String>, in node: inout JSON, path: JSONPointer) throws {
        guard let token = tokens.first else { node = value; return }
        let rest = tokens.dropFirst()
        switch node {
        case .object(var members):
            if rest.isEmpty {
                members[token] = value
            } else {
                guard var child = members[token] else { throw InjectionError("patch path \(path) does not exist") }
                try add(value, at: rest, in: &child, path: path)
                members[token] = child
            }
            node = .object(members)
        case .array(var elements):
            if rest.isEmpty {
                if token == "-" {
                    elements.append(value)
                } else {
                    guard let index = Int(token), elements.indices.contains(index) || index == elements.count else {
                        throw InjectionError("patch path \(path) is out of range")
                    }
                    elements.insert(value, at: index)
                }
            } else {
                guard let index = Int(token), elements.indices.contains(index) else {
                    throw InjectionError("patch path \(path) does not exist")
                }
                try add(value, at: rest, in: &elements[index], path: path)
            }
            node = .array(elements)
        default:
            throw InjectionError("patch path \(path) goes through a value that is neither an object nor an array")
        }
    }
}

/// Why an agent was not injected, or a review could not be read: one line.
public struct InjectionError: Error, CustomStringConvertible, Sendable, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
