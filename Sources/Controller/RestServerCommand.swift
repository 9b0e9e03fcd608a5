import ArgumentParser
import Foundation
import Logging
import RestServer
import Storage
import Telemetry

struct RestServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rest-server",
        abstract: "Serve backup repositories over restic's REST protocol (the internal backup server).")

    @Option(help: "Directory holding the repositories.") var path: String
    @Option(help: "Address to listen on, HOST:PORT.") var listen = "127.0.0.1:8000"
    @Option(help: "htpasswd file with bcrypt entries (htpasswd -B); without it, no authentication.") var htpasswd: String?
    @Flag(help: "Refuse deletes and overwrites, except of locks.") var appendOnly = false
    @Flag(help: "Each user may only use repositories under /USER/.") var privateRepos = false
    @Option(help: "TLS certificate (PEM).") var tlsCert: String?
    @Option(help: "TLS private key (PEM).") var tlsKey: String?
    @Option(help: "Largest accepted request body, in bytes.") var maxRequestSize: Int64 = 256 << 20
    @Option(help: "Serve Prometheus metrics (GET /metrics) on HOST:PORT.") var metricsListen: String?
    @Flag(name: .shortAndLong, help: "Log every request.") var verbose = false

    func validate() throws {
        if (tlsCert == nil) != (tlsKey == nil) { throw ValidationError("--tls-cert and --tls-key go together") }
        if privateRepos && htpasswd == nil { throw ValidationError("--private-repos needs --htpasswd") }
        guard split(listen) != nil else { throw ValidationError("--listen must be HOST:PORT") }
        if let metricsListen, split(metricsListen) == nil { throw ValidationError("--metrics-listen must be HOST:PORT") }
    }

    func split(_ text: String) -> (String, Int)? {
        guard let address = try? HostPort(text, allowZero: true) else { return nil }
        return (address.host.isEmpty ? "0.0.0.0" : address.host, address.port)
    }

    func run() async throws {
        let logger = makeLogger(verbose ? .info : .notice, label: "chebackup-rest-server")
        var config = RestServerConfiguration(path: path)
        (config.host, config.port) = split(listen)!
        config.htpasswdFile = htpasswd
        config.appendOnly = appendOnly
        config.privateRepos = privateRepos
        config.tlsCertificate = tlsCert
        config.tlsKey = tlsKey
        config.maxRequestSize = maxRequestSize
        if htpasswd == nil { logger.warning("no --htpasswd: anyone who can reach \(listen) can read and write the repositories") }
        do {
            let host = config.host
            try await withMetrics(metricsListen.flatMap(split), logger: logger) { [config] in
                try await RestServer(configuration: config, logger: logger).run { [path] port in
                    FileHandle.standardError.write(Data("chebackup rest-server: serving \(path) on \(host):\(port)\n".utf8))
                }
            }
        } catch {
            FileHandle.standardError.write(Data("chebackup rest-server: error: \(error)\n".utf8))
            throw ExitCode.failure
        }
    }
}

/// Runs `body`, and with an address also the metrics endpoint beside it (swift-metrics bootstrapped
/// with a Prometheus registry first); ends when `body` does.
func withMetrics(_ address: (String, Int)?, logger: Logger, _ body: @escaping @Sendable () async throws -> Void) async throws {
    guard let (host, port) = address else { return try await body() }
    let registry = Telemetry.bootstrap()
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask {
            try await Telemetry.serve(registry, host: host, port: port, logger: logger) { bound in
                FileHandle.standardError.write(Data("chebackup: metrics on http://\(host):\(bound)/metrics\n".utf8))
            }
        }
        group.addTask { try await body() }
        defer { group.cancelAll() }
        _ = try await group.next()
    }
}
