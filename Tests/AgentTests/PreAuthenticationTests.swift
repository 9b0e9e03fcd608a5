import AgentClient
import Foundation
import Testing
import TestSupport

/// What an unauthenticated peer can make an agent do: little, briefly (issue 11, item 14).
@Suite struct PreAuthenticationTests {
    /// A raw TCP connection to the agent with a receive time-out, so a missing answer fails the
    /// test instead of hanging it.
    final class RawConnection: @unchecked Sendable {
        let fd: Int32
        init?(_ endpoint: AgentEndpoint) {
            guard case .tcp(_, let port) = endpoint else { return nil }
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var timeout = timeval(tv_sec: 60, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            addr.sin_port = UInt16(port).bigEndian
            let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            if rc != 0 { close(fd); return nil }
        }
        deinit { close(fd) }

        /// Everything the agent sends until it closes (or the time-out): its lines.
        func readUntilClosed() -> (lines: [String], closed: Bool) {
            var data = Data()
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = recv(fd, &buffer, buffer.count, 0)
                if n == 0 { return (lines(data), true) }
                if n < 0 { return (lines(data), errno == ECONNRESET) }
                data.append(contentsOf: buffer[0..<n])
            }
        }

        func readLine() -> String? {
            var data = Data()
            var byte: UInt8 = 0
            while recv(fd, &byte, 1, 0) == 1 {
                if byte == 0x0A { return String(decoding: data, as: UTF8.self) }
                data.append(byte)
            }
            return nil
        }

        func lines(_ data: Data) -> [String] { String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init) }

        @discardableResult
        func send(_ data: Data) -> Bool {
            data.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let n = Foundation.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                    if n <= 0 { return false }
                    offset += n
                }
                return true
            }
        }
    }

    func agent(_ dir: TempDir, _ extra: [String] = []) async throws -> AgentProcess {
        try FileManager.default.createDirectory(atPath: dir.file("d"), withIntermediateDirectories: true)
        return try await AgentProcess(role: "files", arguments: ["--dir", "d=\(dir.file("d"))", "-v"] + extra)
    }

    @Test func anUnterminatedLineIsCutAtTheLimitAndAnswered() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let agent = try await agent(dir)
        let endpoint = agent.endpoint
        let (hello, lines, closed) = try await onThread {
            guard let c = RawConnection(endpoint) else { throw ConformanceFailure("cannot connect") }
            let hello = c.readLine()
            c.send(Data(repeating: 0x41, count: 100_000))  // no newline, ever
            let (lines, closed) = c.readUntilClosed()
            return (hello, lines, closed)
        }
        #expect(hello?.contains("\"type\":\"hello\"") == true)
        #expect(closed, "the agent closes the connection")
        #expect(lines.count == 1 && lines[0].contains("\"code\":\"line_too_long\""), "\(lines)")
        #expect(lines.first?.contains("4096") == true, "\(lines)")
    }

    @Test func aSilentConnectionIsClosedAfterTheHandshakeTimeout() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let agent = try await agent(dir, ["--handshake-timeout", "1"])
        let endpoint = agent.endpoint
        let (hello, lines, closed) = try await onThread {
            guard let c = RawConnection(endpoint) else { throw ConformanceFailure("cannot connect") }
            let hello = c.readLine()
            let (lines, closed) = c.readUntilClosed()
            return (hello, lines, closed)
        }
        #expect(hello?.contains("\"type\":\"hello\"") == true)
        #expect(closed && lines.isEmpty, "\(lines)")
        #expect(agent.log.contains("no authentication within"))
    }

    @Test func connectionsWaitingToAuthenticateAreCapped() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let agent = try await agent(dir, ["--max-pending-connections", "8"])
        let endpoint = agent.endpoint
        var (waiting, hellos, lines, closed) = try await onThread {
            var waiting: [RawConnection] = []
            var hellos = 0
            for _ in 0..<8 {
                guard let c = RawConnection(endpoint) else { throw ConformanceFailure("cannot connect") }
                if c.readLine()?.contains("\"type\":\"hello\"") == true { hellos += 1 }
                waiting.append(c)
            }
            guard let extra = RawConnection(endpoint) else { throw ConformanceFailure("cannot connect") }
            let (lines, closed) = extra.readUntilClosed()
            return (waiting, hellos, lines, closed)
        }
        #expect(hellos == 8)
        #expect(closed && lines.count == 1 && lines[0].contains("\"code\":\"busy\""), "\(lines)")
        #expect(lines.first?.contains("too many connections waiting to authenticate") == true)
        waiting.removeAll()
        // Once they are gone, a controller gets in again (the agent sees the closes shortly).
        var served = false
        for _ in 0..<100 where !served {
            do {
                try await AgentClient.withSession(agent.endpoint, token: token) { try await $0.ping() }
                served = true
            } catch { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(served, "\(agent.log)")
    }

    func residentKiB(_ pid: Int32) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
    }

    /// 200 connections sending 1 MiB each before authenticating: measured before the fix, the
    /// agent grew from 72 to 309 MB and stayed there. Each is now cut at 4 KiB and closed, and
    /// the heap is handed back once they are gone.
    @Test func aFloodOfUnauthenticatedDataDoesNotStayInMemory() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let agent = try await agent(dir, ["--max-pending-connections", "256"])
        let pid = agent.process.process.processIdentifier
        do { try await AgentClient.withSession(agent.endpoint, token: token) { try await $0.ping() } } catch {
            Issue.record("first ping: \(error); the agent's log: \(agent.log)")
            return
        }
        let before = residentKiB(pid)
        let megabyte = Data(repeating: 0x42, count: 1 << 20)
        let endpoint = agent.endpoint
        try await onThread {
            DispatchQueue.concurrentPerform(iterations: 200) { _ in
                guard let c = RawConnection(endpoint) else { return }
                c.send(megabyte)
                _ = c.readUntilClosed()
            }
        }
        do { try await AgentClient.withSession(agent.endpoint, token: token) { try await $0.ping() } } catch {
            Issue.record("ping after the flood: \(error); the agent's log: \(agent.log)")
            return
        }
        try await Task.sleep(for: .milliseconds(500))
        let after = residentKiB(pid)
        #expect(before > 0 && after - before < 48 << 10, "resident \(before) KiB before, \(after) KiB after the flood")
    }

    /// Limits of 0 (or out of range) would make an agent that refuses everything, or times every
    /// hook out at once: they are refused at start with one line naming the flag.
    @Test(arguments: [
        (["--handshake-timeout", "0"], "--handshake-timeout must be at least 1"),
        (["--max-pending-connections", "0"], "--max-pending-connections must be at least 1"),
        (["--max-line-length", "0"], "--max-line-length must be between 65536 and 1073741824"),
        (["--max-line-length", "4096"], "--max-line-length must be between"),
        (["--max-line-length", "2147483648"], "--max-line-length must be between"),
        (["--hook-timeout", "0"], "--hook-timeout must be at least 1"),
        (["--handshake-timeout=-5"], "--handshake-timeout must be at least 1"),
    ])
    func limitsOutOfRangeAreRefusedAtStart(arguments: [String], expected: String) async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let r = try await runAsync(builtProduct("chebackup-agent"),
                                   ["--role", "files", "--listen", "127.0.0.1:0", "--token-file", dir.file("token"), "--dir", "d=\(dir.path)"] + arguments)
        #expect(r.status != 0)
        let lines = r.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") }
        #expect(lines.count == 1 && lines[0].contains(expected), "\(r.stderr)")
    }
}
