import Foundation
import Repository

enum Format {
    static func bytes(_ n: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(n)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(n) B" : String(format: "%.2f %@", value, units[unit])
    }

    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
    }

    static func rate(_ bytes: Int64, _ seconds: Double) -> String {
        seconds > 0 ? Format.bytes(Int64(Double(bytes) / seconds)) + "/s" : "-"
    }

    static func json<T: Encodable>(_ value: T) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var c = encoder.singleValueContainer()
            try c.encode(formatTime(date))
        }
        return String(decoding: (try? encoder.encode(value)) ?? Data("null".utf8), as: UTF8.self)
    }
}

/// Prints a progress line on a terminal (stderr) once a second: bytes, rate, ETA when the total
/// is known, items. Silent when stderr is not a terminal or the user asked for quiet.
final class ProgressLine: Sendable {
    let progress: ProgressCounters
    let enabled: Bool
    let label: String
    private let task: Task<Void, Never>?

    init(_ progress: ProgressCounters, label: String, quiet: Bool) {
        self.progress = progress
        self.label = label
        enabled = !quiet && isatty(2) == 1
        if enabled {
            let start = Date()
            task = Task { [progress] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    if Task.isCancelled { break }
                    let elapsed = Date().timeIntervalSince(start)
                    let done = progress.bytesDone
                    var line = "\r\(label) [\(Format.duration(elapsed))] \(Format.bytes(done)), \(Format.rate(done, elapsed)), \(progress.itemsDone) items"
                    if let total = progress.bytesTotal, total > 0, done > 0 {
                        let eta = elapsed * Double(max(0, total - done)) / Double(done)
                        line += String(format: ", %.0f%%, ETA %@", min(100, Double(done) * 100 / Double(total)), Format.duration(eta))
                    }
                    FileHandle.standardError.write(Data((line + "\u{1B}[K").utf8))
                }
            }
        } else {
            task = nil
        }
    }

    func finish() {
        task?.cancel()
        if enabled { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    }
}

func printOut(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}

/// Reads a line from the terminal (`/dev/tty`) without echo, after `prompt` on it; nil when there
/// is no terminal. The echo is restored whatever happens.
func readSecretFromTerminal(_ prompt: String) -> String? {
    let fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var saved = termios()
    guard tcgetattr(fd, &saved) == 0 else { return nil }
    var quiet = saved
    quiet.c_lflag &= ~tcflag_t(ECHO)
    _ = prompt.withCString { write(fd, $0, strlen($0)) }
    guard tcsetattr(fd, TCSAFLUSH, &quiet) == 0 else { return nil }
    defer {
        _ = tcsetattr(fd, TCSAFLUSH, &saved)
        _ = write(fd, "\n", 1)
    }
    var bytes: [UInt8] = []
    var byte: UInt8 = 0
    while read(fd, &byte, 1) == 1, byte != 10, byte != 13 {
        bytes.append(byte)
        if bytes.count > 4096 { break }
    }
    return String(decoding: bytes, as: UTF8.self)
}
