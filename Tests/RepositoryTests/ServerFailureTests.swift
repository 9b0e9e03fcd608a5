import Foundation
import Logging
@testable import Repository
import Storage
import Testing
import TestSupport

/// A REST server killed in the middle of a backup: the client retries, then fails with a clear
/// error, writes no snapshot; once the server is back, the next backup reuses the packs stored.
@Suite struct ServerFailureTests {
    @Test(.enabled(if: which("rclone") != nil))
    func serverKilledMidBackup() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        var gen = SeededBytes(seed: 31)
        try FileManager.default.createDirectory(atPath: dir.file("src"), withIntermediateDirectories: true)
        for i in 0..<24 { try gen.data(1 << 20).write(to: URL(fileURLWithPath: dir.file("src/f\(i)"))) }

        let port = freeLoopbackPort()
        func startServer() async throws -> ChildProcess {
            let server = try ChildProcess(which("rclone")!, ["serve", "restic", "--addr", "127.0.0.1:\(port)", dir.file("served")],
                                          log: dir.file("rclone.log"))
            #expect(await waitForPortAsync(port), "rclone did not start")
            return server
        }
        let firstServer = try await startServer()
        let pool = BlockingPool(threads: 8)
        defer { pool.shutdown() }
        let url = try RepositoryURL.parse("rest:http://127.0.0.1:\(port)/repo")
        guard case .rest(let location) = url else { return }
        let backend = RESTStorage(location, transport: CurlTransport(pool: pool, redactedLocation: url.description))
        let storage = StorageStack.compose(backend, connections: 2, retries: 3, initialDelay: .milliseconds(20), logger: testLogger)
        _ = try await Repository.initialize(storage: storage, password: "pw", options: testOptions(), logger: testLogger)

        // Kill the server once a few packs are stored.
        let repo = try await Repository.open(storage: storage, password: "pw", logger: testLogger)
        let served = dir.file("served/repo/data")
        let killer = Task {
            while (try? FileManager.default.subpathsOfDirectory(atPath: served).filter { $0.count > 60 }.count) ?? 0 < 4 {
                try await Task.sleep(for: .milliseconds(5))
            }
            firstServer.kill()
        }
        do {
            _ = try await repo.backup([.path(dir.file("src"), name: "files")], options: { var o = BackupOptions(); o.connections = 2; return o }())
            Issue.record("the backup succeeded although the server died")
        } catch let error as StorageError {
            #expect(error.code == .transient)
            #expect(error.message.contains("after 3 attempts") && error.message.contains("127.0.0.1:\(port)"), "\(error)")
        }
        try await killer.value
        let stored = try FileManager.default.subpathsOfDirectory(atPath: dir.file("served/repo/data")).filter { $0.count > 60 }.count
        #expect(stored >= 4)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.file("served/repo/snapshots")).isEmpty)

        let server = try await startServer()
        defer { server.kill() }
        let again = try await Repository.open(storage: storage, password: "pw", logger: testLogger)
        let result = try await again.backup([.path(dir.file("src"), name: "files")])
        let total = try FileManager.default.subpathsOfDirectory(atPath: dir.file("served/repo/data")).filter { $0.count > 60 }.count
        #expect(result.packsStored < total, "stored \(result.packsStored) of \(total) packs again: nothing reused")
        #expect(total - result.packsStored >= stored - 1, "the packs stored before the crash are reused")
        let report = try await Checker(repository: again).check(readData: true)
        #expect(report.errors.isEmpty, "\(report.errors)")
    }
}
