import Foundation
import Repository
import Storage

/// A child program with piped standard streams. Its standard error is kept (the last 4 KiB) for
/// error messages; nothing is written to disk.
final class Subprocess: StreamProducer, @unchecked Sendable {
    let process = Process()
    let name: String
    private let stdoutPipe = Pipe()
    private let stdinPipe = Pipe()
    private let stderrPipe = Pipe()
    private let stderrTail = Locked(Data())
    private let stderrDone = DispatchSemaphore(value: 0)

    /// Starts `executable` with `arguments`; `stdin` true gives it a pipe to write to.
    init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil, stdin: Bool = false) throws {
        name = (executable as NSString).lastPathComponent
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        process.standardOutput = stdoutPipe
        process.standardError = stderrPipe
        process.standardInput = stdin ? stdinPipe : FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw RepositoryError(.sourceUnreadable, "cannot start \(name): \(error.localizedDescription)")
        }
        let errHandle = stderrPipe.fileHandleForReading
        let tail = stderrTail
        let done = stderrDone
        Thread.detachNewThread {
            while true {
                let chunk = errHandle.availableData
                if chunk.isEmpty { break }
                tail.withLock { t in
                    t.append(chunk)
                    if t.count > 4096 { t = t.suffix(4096) }
                }
            }
            done.signal()
        }
    }

    /// The read end of its standard output.
    var fd: Int32 { stdoutPipe.fileHandleForReading.fileDescriptor }
    /// The write end of its standard input.
    var stdinFD: Int32 { stdinPipe.fileHandleForWriting.fileDescriptor }

    func closeStdin() { try? stdinPipe.fileHandleForWriting.close() }

    /// The last lines of its standard error, as one line.
    var stderrSummary: String {
        let text = String(decoding: stderrTail.withLock { $0 }, as: UTF8.self)
        let lines = text.split(separator: "\n").suffix(3).map { $0.trimmingCharacters(in: .whitespaces) }
        return lines.joined(separator: " | ")
    }

    /// Waits for the exit; throws with the end of its standard error when it failed.
    func finish() async throws {
        let process = self.process
        let done = stderrDone
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                process.waitUntilExit()
                _ = done.wait(timeout: .now() + 5)
                c.resume()
            }
        }
        if process.terminationReason == .uncaughtSignal {
            throw RepositoryError(.sourceUnreadable, "\(name) was killed by signal \(process.terminationStatus)")
        }
        if process.terminationStatus != 0 {
            let detail = stderrSummary
            throw RepositoryError(.sourceUnreadable, "\(name) failed with exit status \(process.terminationStatus)\(detail.isEmpty ? "" : ": " + detail)")
        }
    }

    func abort() {
        if process.isRunning { process.terminate() }
        closeStdin()
    }

    /// Runs a program to completion and returns its standard output; throws with stderr on failure.
    static func output(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) async throws -> String {
        let p = try Subprocess(executable, arguments, environment: environment)
        let fd = p.fd
        let data = await withCheckedContinuation { (c: CheckedContinuation<Data, Never>) in
            DispatchQueue.global().async {
                c.resume(returning: FileHandle(fileDescriptor: fd, closeOnDealloc: false).readDataToEndOfFile())
            }
        }
        try await p.finish()
        return String(decoding: data, as: UTF8.self)
    }
}

/// Runs a shell command (a hook) with a time limit.
func runHook(_ command: String, timeout: Duration, what: String) async throws {
    let p = try Subprocess("/bin/sh", ["-c", command])
    let timedOut = Locked(false)
    let succeeded = await withTaskGroup(of: Bool?.self) { group -> Bool in
        group.addTask {
            do { try await p.finish(); return true } catch { return false }
        }
        group.addTask {
            try? await Task.sleep(for: timeout)
            if !Task.isCancelled && p.process.isRunning {
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
        throw RepositoryError(.sourceUnreadable, "\(what) hook timed out after \(timeout): \(command)")
    }
    if !succeeded {
        throw RepositoryError(.sourceUnreadable, "\(what) hook failed (exit status \(p.process.terminationStatus)): \(p.stderrSummary)")
    }
}
