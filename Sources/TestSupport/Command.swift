import CSpawn
import Foundation
import Storage
import Subprocess

/// The result of running a program to completion.
public struct CommandResult: Sendable {
    public let status: Int32
    public let stdout: String
    public let stderr: String
    public let stdoutData: Data
}

/// Finds a built executable of this package: `$CHEBACKUP_BIN_DIR`, else next to the test bundle.
public func builtProduct(_ name: String) -> String {
    if let dir = ProcessInfo.processInfo.environment["CHEBACKUP_BIN_DIR"] { return dir + "/" + name }
    let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    return bundle.appendingPathComponent(name).path
}

/// Runs `executable` with `arguments`, its output captured in a file rather than pipes, and
/// waits for its exit only: for scripts that leave daemons behind (pg_ctl start).
public func runDetached(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws -> CommandResult {
    let dir = TempDir("chebackup-run")
    defer { dir.remove() }
    var env = ProcessInfo.processInfo.environment
    env.merge(environment) { _, new in new }
    let child = try Subprocess(executable, arguments, environment: env, outputFile: dir.file("out"))
    let status = child.waitBlocking()
    let out = (try? Data(contentsOf: URL(fileURLWithPath: dir.file("out")))) ?? Data()
    let text = String(decoding: out, as: UTF8.self)
    return CommandResult(status: (status >> 8) & 0xff, stdout: text, stderr: text, stdoutData: out)
}

/// Runs `executable` with `arguments`, feeding `stdin`, with `environment` added to a clean one.
public func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                stdin: Data? = nil) throws -> CommandResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    var env = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin", "HOME": NSTemporaryDirectory()]
    env.merge(environment) { _, new in new }
    process.environment = env
    // Pipes close-on-exec from the start: a child another test spawns meanwhile (and a daemon it
    // leaves, postgres) must not inherit them, or this read would wait for EOF forever.
    let out = try CloexecPipe()
    let err = try CloexecPipe()
    let input = try CloexecPipe()
    process.standardOutput = out.write
    process.standardError = err.write
    process.standardInput = input.read
    try process.run()
    // The child has its copies; the parent's ends of the child's side go.
    try? out.write.close()
    try? err.write.close()
    try? input.read.close()
    let writer = Thread {
        if let stdin { input.write.write(stdin) }
        try? input.write.close()
    }
    writer.start()
    let errData = Locked(Data())
    let reader = Thread { errData.withLock { $0 = err.read.readDataToEndOfFile() } }
    reader.start()
    let outData = out.read.readDataToEndOfFile()
    process.waitUntilExit()
    while reader.isExecuting || !reader.isFinished { usleep(1000) }
    return CommandResult(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                         stderr: String(decoding: errData.value, as: UTF8.self), stdoutData: outData)
}

/// `run`, on a thread of its own: the threads that run every test's tasks are one a core, and a
/// test that blocks one for a command's duration starves the others (their agents' handshakes
/// then time out). Async tests call this instead of `run`.
public func runAsync(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                     stdin: Data? = nil) async throws -> CommandResult {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(with: Result { try run(executable, arguments, environment: environment, stdin: stdin) })
        }
    }
}

/// `runDetached`, on a thread of its own (see `runAsync`).
public func runDetachedAsync(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) async throws -> CommandResult {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(with: Result { try runDetached(executable, arguments, environment: environment) })
        }
    }
}

/// Runs blocking work (sockets, child processes, CPU-heavy loops) on a thread of its own: the
/// threads that run every test's tasks are few (one a core), and a test that blocks them starves
/// the others (their handshakes then miss the agents' time-outs).
public func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
    }
}

/// A pipe whose both ends are close-on-exec from the moment they exist (pipe2(O_CLOEXEC)).
struct CloexecPipe {
    let read: FileHandle
    let write: FileHandle

    init() throws {
        var fds: [Int32] = [0, 0]
        guard chb_pipe_cloexec(&fds) == 0 else { throw ConformanceFailure("pipe2 failed: \(String(cString: strerror(errno)))") }
        read = FileHandle(fileDescriptor: fds[0], closeOnDealloc: true)
        write = FileHandle(fileDescriptor: fds[1], closeOnDealloc: true)
    }
}
