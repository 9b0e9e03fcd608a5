/// Subprocess: child programs started with posix_spawn, waited for with waitpid. Foundation's
/// Process is not used: on Linux it decides a child has exited only when every process that
/// inherited its monitoring descriptor has, so a daemon started by a script (pg_ctl) or a killed
/// shell's orphan keeps it waiting.
import CSpawn
import Foundation
import Synchronization

/// A child program failed: its name, how it ended and the end of its standard error.
public struct SubprocessError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A value behind a lock, shared by the threads that watch a child.
final class Guarded<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<T>(_ body: (inout Value) throws -> T) rethrows -> T { try mutex.withLock { try body(&$0) } }
    var value: Value { mutex.withLock { $0 } }
}

/// A child program with piped standard streams, started with posix_spawn in its own process
/// group, with a clean signal mask (children of Swift's worker threads would otherwise inherit
/// blocked signals). Its standard error is kept (the last 4 KiB) for error messages.
public final class Subprocess: @unchecked Sendable {
    public let pid: pid_t
    public let name: String
    /// Read end of its standard output.
    public let fd: Int32
    /// Write end of its standard input, or -1.
    private let stdinWrite: Guarded<Int32>
    private let stderrTail = Guarded(Data())
    private let exitStatus = Guarded<Int32?>(nil)
    private let stderrDone = DispatchSemaphore(value: 0)

    /// Starts `executable`. `stdin` true gives it a pipe to write to; `outputFile` sends its
    /// standard output and error to a file instead of pipes; `combineOutput` sends its standard
    /// output where its standard error goes (read all along, the tail kept), for a program whose
    /// output nobody reads (a hook): it can never block on a full pipe.
    public init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil, stdin: Bool = false,
                outputFile: String? = nil, combineOutput: Bool = false) throws {
        name = (executable as NSString).lastPathComponent
        func makePipe() throws -> (Int32, Int32) {
            var fds: [Int32] = [0, 0]
            // Close-on-exec from the start: a child another thread spawns meanwhile must not
            // inherit this pipe (it would hold it open, and its reader would wait forever).
            guard chb_pipe_cloexec(&fds) == 0 else { throw SubprocessError("cannot create a pipe: \(String(cString: strerror(errno)))") }
            return (fds[0], fds[1])
        }
        let out = try makePipe()
        let err = try makePipe()
        let input = stdin ? try makePipe() : (open("/dev/null", O_RDONLY | O_CLOEXEC), -1)

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, input.0, 0)
        if let outputFile {
            posix_spawn_file_actions_addopen(&actions, 1, outputFile, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        } else {
            posix_spawn_file_actions_adddup2(&actions, combineOutput ? err.1 : out.1, 1)
            posix_spawn_file_actions_adddup2(&actions, err.1, 2)
        }
        // Last: nothing else of this process reaches the child (Foundation's pipes, sockets),
        // so a daemon it leaves behind (postgres from pg_ctl) can hold none of them open.
        _ = chb_spawn_closefrom(&actions, 3)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in [SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD] { sigaddset(&defaults, sig) }
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setpgroup(&attr, 0)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        let env = (environment ?? ProcessInfo.processInfo.environment).map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for e in env { free(e) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, executable, &actions, &attr, argv, env)
        close(out.1)
        close(err.1)
        close(input.0)
        guard rc == 0 else {
            close(out.0)
            close(err.0)
            if input.1 >= 0 { close(input.1) }
            throw SubprocessError("cannot start \(name): \(String(cString: strerror(rc)))")
        }
        pid = child
        fd = out.0
        stdinWrite = Guarded(input.1)
        let tail = stderrTail
        let done = stderrDone
        let errRead = err.0
        Thread.detachNewThread {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = read(errRead, &buffer, buffer.count)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                tail.withLock { t in
                    t.append(contentsOf: buffer[0..<n])
                    if t.count > 4096 { t = t.suffix(4096) }
                }
            }
            close(errRead)
            done.signal()
        }
    }

    deinit {
        close(fd)
        closeStdin()
    }

    public var stdinFD: Int32 { stdinWrite.value }

    public func closeStdin() {
        stdinWrite.withLock { fd in
            if fd >= 0 { close(fd) }
            fd = -1
        }
    }

    /// The last lines of its standard error, as one line.
    public var stderrSummary: String {
        let text = String(decoding: stderrTail.value, as: UTF8.self)
        let lines = text.split(separator: "\n").suffix(3).map { $0.trimmingCharacters(in: .whitespaces) }
        return lines.joined(separator: " | ")
    }

    public var isRunning: Bool { exitStatus.value == nil }

    /// Waits for the exit on the calling thread (for synchronous callers).
    public func waitBlocking() -> Int32 {
        if let status = exitStatus.value { return status }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        exitStatus.withLock { if $0 == nil { $0 = status } }
        _ = stderrDone.wait(timeout: .now() + 2)
        return exitStatus.value ?? status
    }

    /// Waits for the exit (once; later calls return the same status).
    public func wait() async -> Int32 {
        if let status = exitStatus.value { return status }
        let pid = self.pid
        let status = await withCheckedContinuation { (c: CheckedContinuation<Int32, Never>) in
            Thread.detachNewThread {
                var status: Int32 = 0
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                c.resume(returning: status)
            }
        }
        exitStatus.withLock { if $0 == nil { $0 = status } }
        _ = stderrDone.wait(timeout: .now() + 2)
        return exitStatus.value ?? status
    }

    /// Waits for the exit; throws with the end of its standard error when it failed.
    public func finish() async throws {
        let status = await wait()
        let signaled = (status & 0x7f) != 0 && (status & 0x7f) != 0x7f
        if signaled {
            throw SubprocessError("\(name) was killed by signal \(status & 0x7f)")
        }
        let code = (status >> 8) & 0xff
        if code != 0 {
            let detail = stderrSummary
            throw SubprocessError("\(name) failed with exit status \(code)\(detail.isEmpty ? "" : ": " + detail)")
        }
    }

    /// Kills it and everything it started (its process group).
    public func abort() {
        if isRunning { kill(-pid, SIGKILL) }
        closeStdin()
    }

    public var terminationStatus: Int32 { ((exitStatus.value ?? 0) >> 8) & 0xff }

    /// Runs a program to completion and returns its standard output; throws with stderr on failure.
    public static func output(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) async throws -> String {
        let p = try Subprocess(executable, arguments, environment: environment)
        let fd = p.fd
        let data = await withCheckedContinuation { (c: CheckedContinuation<Data, Never>) in
            Thread.detachNewThread {
                c.resume(returning: FileHandle(fileDescriptor: fd, closeOnDealloc: false).readDataToEndOfFile())
            }
        }
        try await p.finish()
        return String(decoding: data, as: UTF8.self)
    }

    /// Writes all of `data` to its standard input.
    public func writeAll(_ data: Data) throws {
        let fd = stdinFD
        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            var offset = 0
            while offset < raw.count {
                let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw SubprocessError("cannot write to \(name): \(String(cString: strerror(errno)))") }
                offset += n
            }
        }
    }
}

/// Runs a shell command (a hook) with a time limit. Its output (standard output and error
/// together) is read as it comes, so a chatty hook never blocks; the end of it is in the error
/// when the hook fails.
public func runHook(_ command: String, timeout: Duration, what: String) async throws {
    let p = try Subprocess("/bin/sh", ["-c", command], combineOutput: true)
    let timedOut = Guarded(false)
    let succeeded = await withTaskGroup(of: Bool?.self) { group -> Bool in
        group.addTask {
            do { try await p.finish(); return true } catch { return false }
        }
        group.addTask {
            try? await Task.sleep(for: timeout)
            if !Task.isCancelled && p.isRunning {
                timedOut.withLock { $0 = true }
                p.abort()
            }
            return nil
        }
        while let result = await group.next() {
            if let result {
                group.cancelAll()
                return result
            }
        }
        return false
    }
    if timedOut.value {
        throw SubprocessError("\(what) hook timed out after \(timeout): \(command)")
    }
    if !succeeded {
        throw SubprocessError("\(what) hook failed (exit status \(p.terminationStatus)): \(p.stderrSummary)")
    }
}
