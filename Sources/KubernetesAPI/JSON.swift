import Foundation

/// A JSON value. Kubernetes objects travel as JSON and are handled as such (unknown fields are
/// kept when an object is read, changed and written back); typed models decode from it.
public enum JSON: Sendable, Hashable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSON])
    case object([String: JSON])
}

// MARK: - Accessors

extension JSON {
    public var isNull: Bool { self == .null }

    public var string: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// The value as an integer: an `.int`, or a `.double` with no fractional part.
    public var int: Int64? {
        switch self {
        case .int(let i): return i
        case .double(let d) where d.rounded() == d && abs(d) < 9.2e18: return Int64(d)
        default: return nil
        }
    }

    /// The value as a number (an `.int` or a `.double`).
    public var double: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }

    public var bool: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    public var array: [JSON]? {
        if case .array(let a) = self { return a }
        return nil
    }

    public var object: [String: JSON]? {
        if case .object(let o) = self { return o }
        return nil
    }

    /// An object's member. Setting on a value that is not an object makes it an empty object
    /// first; setting nil removes the member.
    public subscript(key: String) -> JSON? {
        get { object?[key] }
        set {
            var members = object ?? [:]
            members[key] = newValue
            self = .object(members)
        }
    }

    /// An array's element; nil when out of range or not an array.
    public subscript(index: Int) -> JSON? {
        guard let a = array, a.indices.contains(index) else { return nil }
        return a[index]
    }

    /// A member nested several objects deep: `object[path: "metadata", "name"]`. Setting creates
    /// the objects on the way; setting nil removes the last member.
    public subscript(path path: String...) -> JSON? {
        get { self[path: path] }
        set { self[path: path] = newValue }
    }

    public subscript(path path: [String]) -> JSON? {
        get {
            var current: JSON? = self
            for key in path { current = current?[key] }
            return current
        }
        set {
            guard let first = path.first else {
                self = newValue ?? .null
                return
            }
            if path.count == 1 {
                self[first] = newValue
                return
            }
            var child = self[first] ?? .object([:])
            child[path: Array(path.dropFirst())] = newValue
            self[first] = child
        }
    }
}

// MARK: - Kubernetes object metadata

extension JSON {
    /// `metadata.name`.
    public var name: String? { self[path: "metadata", "name"]?.string }
    /// `metadata.namespace`.
    public var namespace: String? { self[path: "metadata", "namespace"]?.string }
    /// `metadata.resourceVersion`.
    public var resourceVersion: String? { self[path: "metadata", "resourceVersion"]?.string }
    /// `metadata.uid`.
    public var uid: String? { self[path: "metadata", "uid"]?.string }
    /// `metadata.generation`.
    public var generation: Int64? { self[path: "metadata", "generation"]?.int }
}

// MARK: - Literals

extension JSON: ExpressibleByNilLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByStringLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral
{
    public init(nilLiteral: ()) { self = .null }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: JSON...) { self = .array(elements) }

    public init(dictionaryLiteral elements: (String, JSON)...) {
        var members: [String: JSON] = [:]
        for (key, value) in elements { members[key] = value }
        self = .object(members)
    }
}

// MARK: - Codable and bytes

extension JSON: Codable {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? c.decode(Int64.self) {
            self = .int(i)
        } else if let d = try? c.decode(Double.self) {
            self = .double(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSON].self) {
            self = .array(a)
        } else {
            // The last alternative reports the real decoding error.
            self = .object(try c.decode([String: JSON].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .int(let i): try c.encode(i)
        case .double(let d): try c.encode(d)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    /// Parses JSON text.
    public init(data: Data) throws {
        do {
            self = try JSONDecoder().decode(JSON.self, from: data)
        } catch {
            throw KubeError(.invalid, "not valid JSON (\(data.count) bytes): \(Self.describe(error))")
        }
    }

    /// The value of an `Encodable` as JSON.
    public init(encoding value: some Encodable) throws {
        let data: Data
        do {
            data = try JSONEncoder().encode(value)
        } catch {
            throw KubeError(.invalid, "cannot encode \(type(of: value)) as JSON: \(Self.describe(error))")
        }
        try self.init(data: data)
    }

    /// Decodes a typed model from this value.
    public func decode<T: Decodable>(_ type: T.Type) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: try data())
        } catch let error as KubeError {
            throw error
        } catch {
            throw KubeError(.invalid, "cannot decode \(T.self) from JSON: \(Self.describe(error))")
        }
    }

    /// JSON text; `sorted` orders object members by key (stable output for comparisons and files).
    public func data(sorted: Bool = false) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = sorted ? [.sortedKeys, .withoutEscapingSlashes] : [.withoutEscapingSlashes]
        do {
            return try encoder.encode(self)
        } catch {
            throw KubeError(.invalid, "cannot encode JSON: \(Self.describe(error))")
        }
    }

    /// A decoding error in one line: what went wrong and where.
    static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.dataCorrupted(let c), DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c),
             DecodingError.keyNotFound(_, let c):
            let path = c.codingPath.map { $0.intValue.map { "[\($0)]" } ?? "." + $0.stringValue }.joined()
            let cause = (c.underlyingError as? NSError)?.userInfo[NSDebugDescriptionErrorKey] as? String
            return (path.isEmpty ? "" : "at \(path): ") + c.debugDescription + (cause.map { " (\($0))" } ?? "")
        case EncodingError.invalidValue(_, let c):
            return c.debugDescription
        default:
            return "\(error)"
        }
    }
}

extension JSON: CustomStringConvertible {
    /// Compact JSON text with sorted keys.
    public var description: String {
        do {
            return String(decoding: try data(sorted: true), as: UTF8.self)
        } catch {
            return "<JSON that cannot be encoded: \(error)>"
        }
    }
}
