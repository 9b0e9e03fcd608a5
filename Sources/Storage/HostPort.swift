import Foundation

/// `HOST:PORT` (`[v6]:PORT` for IPv6; an empty host means every address): the one type for every
/// address the commands and configuration files take.
public struct HostPort: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public struct ParseError: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `text`; `what` names it in the error. `allowZero` accepts port 0 (pick a free one).
    public init(_ text: String, what: String = "address", allowZero: Bool = false) throws {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (allowZero ? 0 : 1)...65535 ~= port else {
            throw ParseError(description: "\(what) \"\(text)\" is not HOST:PORT")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.contains(":") || text.hasPrefix("[") else {
            throw ParseError(description: "\(what) \"\(text)\": write an IPv6 address in brackets, [addr]:port")
        }
        self.init(host: host, port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// The host to connect to: a wildcard listen address means this machine.
    public var connectableHost: String {
        switch host {
        case "", "0.0.0.0": "127.0.0.1"
        case "::": "::1"
        default: host
        }
    }

    /// True when something accepts TCP connections there now (IPv4 literal addresses and names
    /// that resolve to IPv4).
    public func accepts() -> Bool {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(connectableHost, String(port), &hints, &result) == 0, let first = result else { return false }
        defer { freeaddrinfo(result) }
        let fd = socket(first.pointee.ai_family, first.pointee.ai_socktype, first.pointee.ai_protocol)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return connect(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0
    }
}
