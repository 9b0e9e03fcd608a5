import Foundation
import Storage

/// The real services `scripts/test-services.sh` started, as the environment describes them.
/// When `CHEBACKUP_REQUIRE_SERVICES=1` (as `make test` sets it) a missing service is an error,
/// not a skipped test.
public enum TestServices {
    public static let env = ProcessInfo.processInfo.environment
    public static var required: Bool { env["CHEBACKUP_REQUIRE_SERVICES"] == "1" }

    public static var rcloneURL: String? { env["CHEBACKUP_TEST_RCLONE_URL"] }
    public static var s3URL: String? { env["CHEBACKUP_TEST_S3_URL"] }
    public static var sftpURL: String? { env["CHEBACKUP_TEST_SFTP_URL"] }
    public static var sftpDir: String? { env["CHEBACKUP_TEST_SFTP_DIR"] }

    public static var s3Credentials: BackendCredentials {
        var c = BackendCredentials()
        c.awsAccessKeyID = env["CHEBACKUP_TEST_S3_KEY_ID"]
        c.awsSecretAccessKey = env["CHEBACKUP_TEST_S3_SECRET"]
        return c
    }

    public static var sshCredentials: BackendCredentials {
        var c = BackendCredentials()
        c.sshKeyFile = env["CHEBACKUP_TEST_SSH_KEY_FILE"]
        c.sshKnownHosts = env["CHEBACKUP_TEST_SSH_KNOWN_HOSTS"]
        return c
    }

    /// True when the tests that need `url` should run.
    public static func available(_ url: String?) -> Bool { url != nil || required }

    public static func unique(_ tag: String) -> String {
        var rng = SystemRandomNumberGenerator()
        return tag + "-" + String(rng.next() as UInt64, radix: 16)
    }
}

/// A socket bound to 127.0.0.1:`port` (0: any free port), and its port; nil when the port is in use.
private func boundLoopbackSocket(port: Int = 0) -> (fd: Int32, port: Int)? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = UInt16(port).bigEndian
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    guard withUnsafePointer(to: &addr, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }) == 0 else {
        close(fd)
        return nil
    }
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return (fd, Int(UInt16(bigEndian: addr.sin_port)))
}

/// Ports this test process has handed out; none is handed out twice, so two
/// tests running at once never get the same port.
private let handedOut = Locked<Set<Int>>([])

/// A free TCP port on the loopback interface for a server a test starts next, never one this
/// process handed out before. Drawn at random from 20000-32767, below Linux's ephemeral range
/// (32768-60999), as scripts/free-port.py does: a port from that range (what binding port 0
/// gives) can be taken by any outgoing connection, or by a process binding port 0, before the
/// server binds it.
public func freeLoopbackPort() -> Int {
    while true {
        let port = Int.random(in: 20000...32767)
        guard let socket = boundLoopbackSocket(port: port) else { continue }
        close(socket.fd)
        if handedOut.withLock({ $0.insert(port).inserted }) { return port }
    }
}

/// A loopback port that nothing listens on and that no other test can take
/// while this value lives: the socket is bound (so the kernel hands the port to
/// no one else) but never listens, so connecting to it is refused at once.
public final class ClosedPort: @unchecked Sendable {
    public let port: Int
    private let fd: Int32

    public init() {
        (fd, port) = boundLoopbackSocket()!
        handedOut.withLock { _ = $0.insert(port) }
    }

    deinit { close(fd) }
}

/// Waits until something accepts connections on `port` (at most `seconds`), suspended: there is
/// no blocking variant, since a test that blocks one of the few threads all tests share delays
/// the others past their time-outs.
public func waitForPortAsync(_ port: Int, host: String = "127.0.0.1", seconds: Double = 30) async -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if portAccepts(port, host: host) { return true }
        do { try await Task.sleep(for: .milliseconds(50)) } catch { return false }
    }
    return false
}

/// One connection attempt (a refused loopback connect returns at once).
private func portAccepts(_ port: Int, host: String) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr(host)
    addr.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
}

/// Sends an HTTP request whose body stops after `sent` of its declared `declared` bytes, then
/// drops the connection: what an upload cut off by a crash or network failure looks like.
public func sendTruncatedUpload(port: Int, method: String = "POST", path: String, declared: Int, sent: Int,
                                headers: [String] = []) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = UInt16(port).bigEndian
    guard withUnsafePointer(to: &addr, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }) == 0 else { return }
    var request = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nContent-Length: \(declared)\r\n"
    for h in headers { request += h + "\r\n" }
    request += "\r\n"
    var bytes = Array(request.utf8)
    bytes += [UInt8](repeating: 0x5A, count: sent)
    _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    usleep(100_000)
}

/// A process started for a test and killed when done.
public final class ChildProcess: @unchecked Sendable {
    public let process: Process
    public let logPath: String

    public convenience init(_ executable: String, _ arguments: [String], log: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        try self.init(launching: process, log: log)
    }

    /// Starts a configured `Process`, its output going to `log`.
    public init(launching process: Process, log: String) throws {
        self.process = process
        logPath = log
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let handle = FileHandle(forWritingAtPath: log)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
    }

    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Waits, suspended (a test that blocks one of the few threads all tests share delays the
    /// others past their time-outs), until the log has a whole line containing `marker`; returns
    /// what follows the marker on that line. nil when the process exits first or after `seconds`.
    public func waitForLine(containing marker: String, seconds: Double = 60) async -> Substring? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let text = log
            if let range = text.range(of: marker), let end = text[range.upperBound...].firstIndex(of: "\n") {
                return text[range.upperBound..<end]
            }
            if !process.isRunning { return nil }
            do { try await Task.sleep(for: .milliseconds(50)) } catch { return nil }
        }
        return nil
    }

    /// The port a server that binds port 0 announces after `marker` ("listening on 127.0.0.1:").
    public func waitForPort(announcedAfter marker: String, seconds: Double = 60) async -> Int? {
        await waitForLine(containing: marker, seconds: seconds).flatMap { Int($0.prefix { $0.isNumber }) }
    }

    public func kill(signal: Int32 = SIGKILL) {
        if process.isRunning {
            Foundation.kill(process.processIdentifier, signal)
            process.waitUntilExit()
        }
    }

    deinit { kill() }
}

/// The path of a program on the PATH.
public func which(_ name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let path = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}
