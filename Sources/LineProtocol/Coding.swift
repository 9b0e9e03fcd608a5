import Foundation
import Repository

extension Message: Codable {
    private enum TypeKey: String, CodingKey { case type }

    public init(from decoder: any Decoder) throws {
        let type = try decoder.container(keyedBy: TypeKey.self).decode(String.self, forKey: .type)
        switch type {
        case "hello": self = .hello(try Hello(from: decoder))
        case "auth": self = .auth(try Auth(from: decoder))
        case "welcome": self = .welcome(try Welcome(from: decoder))
        case "backup": self = .backup(try BackupRequest(from: decoder))
        case "restore": self = .restore(try RestoreRequest(from: decoder))
        case "status": self = .status(try Simple(from: decoder))
        case "ping": self = .ping(try Simple(from: decoder))
        case "cancel": self = .cancel(try Cancel(from: decoder))
        case "event": self = .event(try Event(from: decoder))
        case "result": self = .result(try ResultMessage(from: decoder))
        case "error": self = .error(try ErrorMessage(from: decoder))
        default: throw UnknownType(type: type)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: TypeKey.self)
        try c.encode(type, forKey: .type)
        switch self {
        case .hello(let m): try m.encode(to: encoder)
        case .auth(let m): try m.encode(to: encoder)
        case .welcome(let m): try m.encode(to: encoder)
        case .backup(let m): try m.encode(to: encoder)
        case .restore(let m): try m.encode(to: encoder)
        case .status(let m), .ping(let m): try m.encode(to: encoder)
        case .cancel(let m): try m.encode(to: encoder)
        case .event(let m): try m.encode(to: encoder)
        case .result(let m): try m.encode(to: encoder)
        case .error(let m): try m.encode(to: encoder)
        }
    }
}

struct UnknownType: Error {
    let type: String
}

/// Turns lines into messages and messages into lines.
public enum LineCodec {
    /// One line (no newline) for `message`.
    public static func encode(_ message: Message) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var c = encoder.singleValueContainer()
            try c.encode(formatTime(date))
        }
        // Encoding our own value types cannot fail.
        return (try? encoder.encode(message)) ?? Data("{\"type\":\"error\",\"code\":\"internal\",\"message\":\"encoding failed\"}".utf8)
    }

    /// The message a line holds, or the protocol error to answer with.
    public static func decode(_ line: Data) -> Result<Message, ErrorMessage> {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let date = parseTime(text) else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "bad time"))
            }
            return date
        }
        guard (try? JSONSerialization.jsonObject(with: line)) is [String: Any] else {
            return .failure(ErrorMessage(code: .badJSON, message: "the line is not a JSON object"))
        }
        let id = ((try? JSONSerialization.jsonObject(with: line)) as? [String: Any])?["id"] as? String
        do {
            return .success(try decoder.decode(Message.self, from: line))
        } catch let unknown as UnknownType {
            return .failure(ErrorMessage(id: id, code: .unknownType, message: "unknown message type \"\(unknown.type.prefix(64))\""))
        } catch DecodingError.keyNotFound(let key, _) {
            return .failure(ErrorMessage(id: id, code: .invalidRequest, message: "missing field \"\(key.stringValue)\""))
        } catch DecodingError.typeMismatch(_, let context) {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            return .failure(ErrorMessage(id: id, code: .invalidRequest, message: "field \"\(field)\" has the wrong type"))
        } catch {
            return .failure(ErrorMessage(id: id, code: .invalidRequest, message: "invalid message"))
        }
    }
}
