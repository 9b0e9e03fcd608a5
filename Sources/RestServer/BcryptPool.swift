import Foundation

/// A few dedicated threads for bcrypt, which is slow on purpose: wrong passwords then cannot
/// occupy the threads that serve requests. At most `threads + queueLimit` checks are accepted
/// at once; a further one is refused at once with 503 instead of waiting.
final class BcryptPool: Sendable {
    private struct State {
        var jobs: [@Sendable () -> Void] = []
        var accepted = 0
        var stopped = false
    }
    private let condition = NSCondition()
    private nonisolated(unsafe) var state = State()
    let threads: Int
    let queueLimit: Int

    init(threads: Int, queueLimit: Int, name: String = "rest-bcrypt") {
        self.threads = max(1, threads)
        self.queueLimit = max(0, queueLimit)
        for i in 0..<self.threads {
            let thread = Thread { [self] in
                pthread_setspecific(Self.marker, UnsafeRawPointer(bitPattern: 1))
                work()
            }
            thread.name = "\(name)-\(i)"
            thread.start()
        }
    }

    /// Marks the pool's threads (thread names are not reliable on Linux Foundation).
    private static let marker: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    /// Whether the calling thread is one of a pool's.
    static var onPoolThread: Bool { pthread_getspecific(marker) != nil }

    /// Runs `body` on one of the pool's threads; throws 503 when the pool and its queue are full.
    func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let accepted = locked { () -> Bool in
                guard !state.stopped, state.accepted < threads + queueLimit else { return false }
                state.accepted += 1
                state.jobs.append { continuation.resume(returning: body()) }
                condition.signal()
                return true
            }
            if !accepted {
                continuation.resume(throwing: HTTPFailure(.serviceUnavailable, "too many password checks at once; retry later"))
            }
        }
    }

    /// Lets the threads end once the queued checks are done.
    func shutdown() {
        locked {
            state.stopped = true
            condition.broadcast()
        }
    }

    private func work() {
        while true {
            let job = locked { () -> (@Sendable () -> Void)? in
                while state.jobs.isEmpty && !state.stopped { condition.wait() }
                return state.jobs.isEmpty ? nil : state.jobs.removeFirst()
            }
            guard let job else { return }
            job()
            locked { state.accepted -= 1 }
        }
    }

    private func locked<T>(_ body: () -> T) -> T {
        condition.lock()
        defer { condition.unlock() }
        return body()
    }
}
