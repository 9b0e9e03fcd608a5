import Foundation
import HummingbirdBcrypt
@testable import RestServer
import Synchronization
import Testing
import TestSupport

/// A gate that blocks the threads that reach it while it is closed, and counts them.
final class Gate: Sendable {
    private let condition = NSCondition()
    private struct State {
        var closed = false
        var threadNames: [String] = []
    }
    private nonisolated(unsafe) var state = State()

    private func locked<T>(_ body: () -> T) -> T {
        condition.lock()
        defer { condition.unlock() }
        return body()
    }

    func close() { locked { state.closed = true } }
    func open() { locked { state.closed = false; condition.broadcast() } }
    var threadNames: [String] { locked { state.threadNames } }

    func pass() {
        locked {
            state.threadNames.append(BcryptPool.onPoolThread ? "rest-bcrypt" : "elsewhere")
            while state.closed { condition.wait() }
        }
    }
}

/// Item 22: bcrypt runs on its own small pool with a bounded queue; a verified password is
/// cached; failures from one client back off without holding a thread.
@Suite struct RestAuthenticationTests {
    func htpasswd(_ dir: TempDir) throws -> String {
        try "che:\(Bcrypt.hash("right", cost: 4))\nother:\(Bcrypt.hash("pw2", cost: 4))\n"
            .write(toFile: dir.file("htpasswd"), atomically: true, encoding: .utf8)
        return dir.file("htpasswd")
    }

    @Test func wrongPasswordsWaitOnABoundedPoolWhileACachedUserIsServed() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let gate = Gate()
        let server = try await RunningServer { [file = try! htpasswd(dir)] in
            $0.htpasswdFile = file
            $0.bcryptThreads = 1
            $0.bcryptQueueLimit = 1
            $0.authFailureDelay = .zero
            $0.hooks.beforeBcrypt = { gate.pass() }
        }
        #expect(try await server.raw("POST", "/r/?create=true", user: "che", password: "right").0 == 200)
        try #require(gate.threadNames.count == 1)
        try #require(gate.threadNames.allSatisfy { $0.hasPrefix("rest-bcrypt") }, "bcrypt ran on \(gate.threadNames)")

        gate.close()
        let (finished, sink) = AsyncStream<Int>.makeStream()
        let done = Shared(0)
        func wrong() -> Task<Void, Never> {
            Task {
                let status = (try? await server.raw("GET", "/r/keys/", user: "che", password: "wrong"))?.0 ?? -1
                done.value.withLock { $0 += 1 }
                sink.yield(status)
            }
        }
        let running = wrong()
        while gate.threadNames.count < 2 { try await Task.sleep(for: .milliseconds(5)) }
        // One more fits in the queue; the next one is refused at once instead of waiting.
        let queued = [wrong(), wrong()]
        var results = finished.makeAsyncIterator()
        #expect(await results.next() == 503)
        // The pool's thread is busy and its queue full, and a verified user is still served.
        #expect(try await server.raw("GET", "/r/keys/", user: "che", password: "right").0 == 200)
        #expect(done.value.withLock { $0 } == 1)
        gate.open()
        #expect(await results.next() == 401)
        #expect(await results.next() == 401)
        _ = await running.value
        for task in queued { _ = await task.value }
        #expect(gate.threadNames.count == 3 && gate.threadNames.allSatisfy { $0.hasPrefix("rest-bcrypt") })
    }

    @Test func failuresFromOneClientBackOffWithoutRunningBcrypt() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let gate = Gate()
        let server = try await RunningServer { [file = try! htpasswd(dir)] in
            $0.htpasswdFile = file
            $0.authFailureDelay = .seconds(3600)
            $0.authFailureWaiters = 0
            $0.hooks.beforeBcrypt = { gate.pass() }
        }
        #expect(try await server.raw("POST", "/r/?create=true", user: "che", password: "right").0 == 200)
        #expect(try await server.raw("GET", "/r/keys/", user: "che", password: "wrong").0 == 401)
        #expect(gate.threadNames.count == 2)
        let (second, _) = try await server.raw("GET", "/r/keys/", user: "che", password: "wrong-again")
        #expect(second == 429, "a client that just failed was let try again at once")
        #expect(try await server.raw("GET", "/r/keys/", user: "other", password: "guess").0 == 429)
        #expect(gate.threadNames.count == 2, "bcrypt ran for a client inside its back-off")
        // A password verified before is answered from the cache, back-off or not.
        #expect(try await server.raw("GET", "/r/keys/", user: "che", password: "right").0 == 200)
    }
}
