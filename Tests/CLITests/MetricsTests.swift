import Foundation
import HummingbirdBcrypt
import Testing
import TestSupport

/// `rest-server --metrics-listen`: its requests by method and status, scraped and parsed.
@Suite struct RestServerMetricsTests {
    @Test func requestsAreCountedByMethodAndStatus() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        try "che:\(Bcrypt.hash("metrics pw", cost: 4))\n".write(toFile: dir.file("htpasswd"), atomically: true, encoding: .utf8)
        let (port, metricsPort) = (freeLoopbackPort(), freeLoopbackPort())
        try FileManager.default.createDirectory(atPath: dir.file("data"), withIntermediateDirectories: true)
        let server = try ChildProcess(builtProduct("chebackup"), ["rest-server", "--path", dir.file("data"), "--listen", "127.0.0.1:\(port)",
                                                                 "--htpasswd", dir.file("htpasswd"), "--metrics-listen", "127.0.0.1:\(metricsPort)"],
                                      log: dir.file("server.log"))
        defer { server.kill() }
        let up = await waitForPortAsync(port, seconds: 90)
        let metricsUp = await waitForPortAsync(metricsPort, seconds: 90)
        #expect(up && metricsUp)
        let curl = try #require(which("curl"))
        for _ in 0..<3 { _ = try await runAsync(curl, ["-s", "-o", "/dev/null", "http://127.0.0.1:\(port)/che/config"]) }
        _ = try await runAsync(curl, ["-s", "-o", "/dev/null", "-u", "che:metrics pw", "-X", "POST", "http://127.0.0.1:\(port)/che/?create=true"])
        _ = try await runAsync(curl, ["-s", "-o", "/dev/null", "-u", "che:metrics pw", "http://127.0.0.1:\(port)/che/config"])
        let scrape = try await runAsync(curl, ["-s", "http://127.0.0.1:\(metricsPort)/metrics"])
        let metrics = try ScrapedMetrics(parsing: scrape.stdout)
        #expect(metrics.types["chebackup_rest_requests_total"] == "counter")
        #expect(metrics.value("chebackup_rest_requests_total", ["method": "GET", "status": "401"]) == 3, "\(scrape.stdout)")
        #expect(metrics.value("chebackup_rest_requests_total", ["method": "POST", "status": "200"]) == 1)
        #expect(metrics.value("chebackup_rest_requests_total", ["method": "GET", "status": "404"]) == 1, "no config yet after create: \(scrape.stdout)")
        let bad = try await runAsync(builtProduct("chebackup"), ["rest-server", "--path", dir.file("data"), "--metrics-listen", "nowhere"])
        #expect(bad.status != 0 && bad.stderr.contains("--metrics-listen must be HOST:PORT"))
    }
}
