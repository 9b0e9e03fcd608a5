import Foundation
import Synchronization

/// A fixed set of dedicated threads for blocking calls (file I/O, libcurl transfers), so they never
/// occupy Swift's cooperative thread pool, which has only as many threads as cores.
public final class BlockingPool: @unchecked Sendable {
    // All mutable state is guarded by `condition`.
    private let condition = NSCondition()
    private var jobs: [@Sendable () -> Void] = []
    private var head = 0
    private var stopped = false
    public let threadCount: Int

    public init(threads: Int, name: String = "chebackup-io") {
        threadCount = max(1, threads)
        for index in 0..<threadCount {
            let thread = Thread { [self] in self.work() }
            thread.name = "\(name)-\(index)"
            thread.start()
        }
    }

    /// Runs `body` on one of the pool's threads and returns its result.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            enqueue {
                do { continuation.resume(returning: try body()) } catch { continuation.resume(throwing: error) }
            }
        }
    }

    /// Lets the threads finish their queued jobs and exit.
    public func shutdown() {
        condition.lock()
        stopped = true
        condition.broadcast()
        condition.unlock()
    }

    private func enqueue(_ job: @escaping @Sendable () -> Void) {
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    private func work() {
        while true {
            condition.lock()
            while head == jobs.count && !stopped { condition.wait() }
            if head == jobs.count {
                condition.unlock()
                return
            }
            let job = jobs[head]
            head += 1
            if head == jobs.count {
                jobs.removeAll(keepingCapacity: true)
                head = 0
            }
            condition.unlock()
            job()
        }
    }
}

/// A counting semaphore for async code: `acquire` suspends (without blocking a thread) until a
/// permit is free. Used for backpressure and for concurrency limits.
public final class AsyncSemaphore: Sendable {
    private struct State {
        var available: Int
        var waiters: [(Int, CheckedContinuation<Void, Never>)] = []
    }

    private let state: Mutex<State>

    public init(permits: Int) {
        state = Mutex(State(available: permits))
    }

    public func acquire(_ count: Int = 1) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { s -> Bool in
                if s.waiters.isEmpty && s.available >= count {
                    s.available -= count
                    return true
                }
                s.waiters.append((count, continuation))
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    public func release(_ count: Int = 1) {
        let ready = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.available += count
            var ready: [CheckedContinuation<Void, Never>] = []
            while let first = s.waiters.first, first.0 <= s.available {
                s.available -= first.0
                ready.append(first.1)
                s.waiters.removeFirst()
            }
            return ready
        }
        for continuation in ready { continuation.resume() }
    }

    /// Runs `body` holding `count` permits.
    public func withPermit<T>(_ count: Int = 1, _ body: () async throws -> T) async rethrows -> T {
        await acquire(count)
        defer { release(count) }
        return try await body()
    }
}

/// A value behind a lock, as a reference that closures and tasks can share.
public final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    public init(_ value: Value) { mutex = Mutex(value) }

    public func withLock<T>(_ body: (inout Value) throws -> T) rethrows -> T {
        try mutex.withLock { try body(&$0) }
    }

    public var value: Value { mutex.withLock { $0 } }
}

/// glibc's `mallopt` (from malloc.h, which Swift's Glibc module does not import). Chunks (about
/// 1 MiB) are reused from malloc's heaps; packs (16 MiB) are mapped and unmapped; two heaps, not
/// one per thread; free heap memory is returned past 4 MiB. Measured on the benchmark corpus:
/// glibc's defaults keep 40-60% more memory resident for the same speed.
/// `CHEBACKUP_MALLOC="param=value,..."` (mallopt numbers) overrides, for tuning.
public func tuneAllocator() {
    typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return }
    let mallopt = unsafeBitCast(symbol, to: Mallopt.self)
    let spec = ProcessInfo.processInfo.environment["CHEBACKUP_MALLOC"] ?? "-3=8388608,-8=2,-1=4194304"
    for item in spec.split(separator: ",") {
        let kv = item.split(separator: "=")
        if kv.count == 2, let param = Int32(kv[0]), let value = Int32(kv[1]) { _ = mallopt(param, value) }
    }
}

/// glibc's `malloc_trim(0)`: hands the whole free pages inside malloc's heaps back to the kernel.
/// glibc returns only the top of a heap on its own, so pages freed between live allocations stay
/// resident; a long backup, which frees chunk-sized buffers among long-lived index entries, would
/// otherwise grow in RSS with its input.
public func releaseFreeHeapPages() {
    typealias MallocTrim = @convention(c) (Int) -> Int32
    guard let symbol = mallocTrimSymbol.value else { return }
    _ = unsafeBitCast(symbol, to: MallocTrim.self)(0)
}

private let mallocTrimSymbol = SendableSymbol(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim"))

private struct SendableSymbol: @unchecked Sendable {  // a function address, immutable
    let value: UnsafeMutableRawPointer?
    init(_ value: UnsafeMutableRawPointer?) { self.value = value }
}
