import Foundation
import HummingbirdBcrypt
import Logging
@testable import RestServer
import Storage
import Synchronization
import Testing
import TestSupport

/// Our REST server, started in-process on a free port for one test.
final class RunningServer: Sendable {
    let port: Int
    let dir: TempDir
    let task: Task<Void, any Error>

    init(configure: (inout RestServerConfiguration) -> Void = { _ in }) async throws {
        dir = TempDir("chebackup-rest")
        var config = RestServerConfiguration(path: dir.path + "/repos")
        config.port = 0
        configure(&config)
        var logger = Logger(label: "rest-server-test")
        logger.logLevel = .critical
        let (stream, continuation) = AsyncStream<Int>.makeStream()
        let server = RestServer(configuration: config, logger: logger)
        task = Task { try await server.run { port in continuation.yield(port) } }
        var iterator = stream.makeAsyncIterator()
        port = await iterator.next() ?? 0
    }

    var scheme: String { "http" }

    func url(_ repo: String, user: String? = nil, password: String? = nil, scheme: String = "http") throws -> RepositoryURL {
        let auth = user.map { "\($0):\(password ?? "")@" } ?? ""
        return try RepositoryURL.parse("rest:\(scheme)://\(auth)127.0.0.1:\(port)/\(repo)")
    }

    func storage(_ repo: String, user: String? = nil, password: String? = nil, caFile: String? = nil,
                 scheme: String = "http") throws -> any Storage {
        var credentials = BackendCredentials()
        credentials.caFile = caFile
        var logger = Logger(label: "t")
        logger.logLevel = .critical
        return try StorageStack.open(try url(repo, user: user, password: password, scheme: scheme), credentials: credentials,
                                     retries: 1, pool: testPool, logger: logger)
    }

    /// A raw request (for what our client never sends): status code and body.
    func raw(_ method: String, _ path: String, body: Data? = nil, headers: [(String, String)] = [],
             user: String? = nil, password: String? = nil) async throws -> (Int, String) {
        let transport = CurlTransport(pool: testPool, redactedLocation: "test")
        var request = CurlRequest(method: method, url: "http://127.0.0.1:\(port)\(path)")
        request.body = body
        request.headers = headers
        request.username = user
        request.password = password
        request.pathAsIs = true
        let response = try await transport.perform(request)
        return (response.status, String(decoding: response.body, as: UTF8.self))
    }

    deinit {
        task.cancel()
        dir.remove()
    }
}

let testPool = BlockingPool(threads: 16, name: "rest-test")
let hexName = String(repeating: "ab", count: 32)

@Suite struct RestServerTests {
    @Test(arguments: StorageConformance.cases.map(\.name))
    func conformance(caseName: String) async throws {
        let server = try await RunningServer()
        let storage = try server.storage("repo")
        try await storage.create()
        let harness = StorageConformance.Harness(simulateInterruptedUpload: { handle, data in
            sendTruncatedUpload(port: server.port, path: "/repo/\(handle.type.rawValue)/\(handle.name)",
                                declared: data.count, sent: data.count / 2)
        })
        try await StorageConformance.cases.first { $0.name == caseName }!.run(storage, harness)
        // Nothing half-written is left lying around either.
        let leftovers = try FileManager.default.subpathsOfDirectory(atPath: server.dir.path + "/repos/repo").filter {
            ($0 as NSString).lastPathComponent.hasPrefix(".upload-")
        }
        #expect(leftovers.isEmpty, "temporary files left: \(leftovers)")
    }

    @Test func rejectsTraversalMalformedNamesAndOversizedBodies() async throws {
        let server = try await RunningServer { $0.maxRequestSize = 1 << 20 }
        _ = try await server.raw("POST", "/repo/?create=true")
        for path in ["/repo/../etc/passwd", "/repo/%2e%2e/x/config", "/repo/data/not-hex", "/repo/keys/..%2f..%2fescape",
                     "/.hidden/config", "/repo/data/" + String(repeating: "g", count: 64)] {
            let (status, _) = try await server.raw("GET", path)
            #expect(status == 400 || status == 404, "\(path) gave \(status)")
        }
        #expect(!FileManager.default.fileExists(atPath: server.dir.path + "/escape"))
        let (tooLarge, _) = try await server.raw("POST", "/repo/data/\(hexName)", body: Data(count: (1 << 20) + 1))
        #expect(tooLarge == 413)
        let (noRepo, _) = try await server.raw("POST", "/missing/data/\(hexName)", body: Data("x".utf8))
        #expect(noRepo == 404)
        let (method, _) = try await server.raw("PUT", "/repo/data/\(hexName)", body: Data("x".utf8))
        #expect(method == 405)
        let (range, _) = try await server.raw("GET", "/repo/config", headers: [("Range", "bytes=5-9")])
        #expect(range == 404)
        _ = try await server.raw("POST", "/repo/keys/\(hexName)", body: Data("0123456789".utf8))
        let (partial, text) = try await server.raw("GET", "/repo/keys/\(hexName)", headers: [("Range", "bytes=2-4")])
        #expect(partial == 206 && text == "234")
        let (unsatisfiable, _) = try await server.raw("GET", "/repo/keys/\(hexName)", headers: [("Range", "bytes=20-30")])
        #expect(unsatisfiable == 416)
    }

    @Test func listsInBothProtocolVersions() async throws {
        let server = try await RunningServer()
        _ = try await server.raw("POST", "/r/?create=true")
        _ = try await server.raw("POST", "/r/data/\(hexName)", body: Data("12345".utf8))
        let (_, v1) = try await server.raw("GET", "/r/data/")
        #expect(v1 == "[\"\(hexName)\"]")
        let (_, v2) = try await server.raw("GET", "/r/data/", headers: [("Accept", "application/vnd.x.restic.rest.v2")])
        #expect(v2 == "[{\"name\":\"\(hexName)\",\"size\":5}]")
    }

    /// A received pack leaves the page cache once synced (the next upload reuses its pages);
    /// other files stay cached.
    @Test(.enabled(if: pageCacheIsObservable, "the temporary directory is on tmpfs, whose pages never leave"))
    func receivedPacksAreReleasedFromThePageCache() async throws {
        let server = try await RunningServer()
        _ = try await server.raw("POST", "/r/?create=true")
        var gen = SeededBytes(seed: 8)
        #expect(try await server.raw("POST", "/r/data/\(hexName)", body: gen.data(2 << 20)).0 == 200)
        #expect(try await server.raw("POST", "/r/index/\(hexName)", body: gen.data(2 << 20)).0 == 200)
        guard let pack = pageCacheResidency(server.dir.path + "/repos/r/data/ab/\(hexName)"),
              let index = pageCacheResidency(server.dir.path + "/repos/r/index/\(hexName)") else { Issue.record("cannot read the page cache residency"); return }
        #expect(pack.resident == 0, "\(pack.resident) of \(pack.pages) pages of the pack still cached")
        #expect(index.resident == index.pages)
    }

    /// A pack served leaves the page cache behind the reads (a restore fetches each pack once);
    /// other files stay cached.
    @Test(.enabled(if: pageCacheIsObservable, "the temporary directory is on tmpfs, whose pages never leave"))
    func servedPacksLeaveThePageCache() async throws {
        let server = try await RunningServer()
        _ = try await server.raw("POST", "/r/?create=true")
        var gen = SeededBytes(seed: 9)
        let (packData, indexData) = (gen.data(9 << 20 + 123), gen.data(3 << 20))
        let storage = try server.storage("r")
        try await storage.save(Handle(.data, hexName), data: packData)
        try await storage.save(Handle(.index, hexName), data: indexData)
        let packPath = server.dir.path + "/repos/r/data/ab/\(hexName)", indexPath = server.dir.path + "/repos/r/index/\(hexName)"
        for path in [packPath, indexPath] { _ = FileManager.default.contents(atPath: path) }  // both cached now
        guard let before = pageCacheResidency(packPath) else { Issue.record("cannot read the page cache residency"); return }
        #expect(before.resident == before.pages, "reading the pack should have cached it")
        #expect(try await storage.load(Handle(.data, hexName)) == packData)
        #expect(try await storage.load(Handle(.index, hexName)) == indexData)
        guard let pack = pageCacheResidency(packPath), let index = pageCacheResidency(indexPath) else {
            Issue.record("cannot read the page cache residency"); return
        }
        #expect(pack.resident == 0, "\(pack.resident) of \(pack.pages) pages of the served pack still cached")
        #expect(index.resident == index.pages)
    }

    @Test func basicAuthAgainstBcryptHtpasswd() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        try "# users\nche:\(Bcrypt.hash("s3cret", cost: 4))\nother:\(Bcrypt.hash("pw2", cost: 4))\n"
            .write(toFile: dir.file("htpasswd"), atomically: true, encoding: .utf8)
        let server = try await RunningServer { $0.htpasswdFile = dir.file("htpasswd") }
        let (anonymous, _) = try await server.raw("POST", "/r/?create=true")
        #expect(anonymous == 401)
        let (wrong, _) = try await server.raw("POST", "/r/?create=true", user: "che", password: "nope")
        #expect(wrong == 401)
        let storage = try server.storage("r", user: "che", password: "s3cret")
        try await storage.create()
        try await storage.save(Handle(.keys, hexName), data: Data("k".utf8))
        #expect(try await storage.load(Handle(.keys, hexName)) == Data("k".utf8))
        let bad = try server.storage("r", user: "che", password: "hunter2-not-it")
        do {
            _ = try await bad.list(.keys)
            Issue.record("a wrong password was accepted")
        } catch let error as StorageError {
            #expect(error.code == .accessDenied)
            #expect(!error.description.contains("hunter2"), "the password must not appear in errors: \(error)")
        }
    }

    @Test func appendOnlyRefusesDeletesAndOverwritesButNotLocks() async throws {
        let server = try await RunningServer { $0.appendOnly = true }
        let storage = try server.storage("r")
        try await storage.create()
        try await storage.save(Handle(.data, hexName), data: Data("pack".utf8))
        let (overwrite, _) = try await server.raw("POST", "/r/data/\(hexName)", body: Data("other".utf8))
        #expect(overwrite == 403)
        #expect(try await storage.load(Handle(.data, hexName)) == Data("pack".utf8))
        let (delete, _) = try await server.raw("DELETE", "/r/data/\(hexName)")
        #expect(delete == 403)
        try await storage.save(Handle(.locks, hexName), data: Data("lock".utf8))
        try await storage.remove(Handle(.locks, hexName))
        #expect(!(try await storage.exists(Handle(.locks, hexName))))
    }

    @Test func privateReposKeepUsersApart() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        try "alice:\(Bcrypt.hash("a", cost: 4))\nbob:\(Bcrypt.hash("b", cost: 4))\n"
            .write(toFile: dir.file("htpasswd"), atomically: true, encoding: .utf8)
        let server = try await RunningServer {
            $0.htpasswdFile = dir.file("htpasswd")
            $0.privateRepos = true
        }
        try await server.storage("alice/che", user: "alice", password: "a").create()
        let (status, _) = try await server.raw("GET", "/alice/che/keys/", user: "bob", password: "b")
        #expect(status == 403)
        let (own, _) = try await server.raw("GET", "/alice/che/keys/", user: "alice", password: "a")
        #expect(own == 200)
    }

    @Test(.enabled(if: which("openssl") != nil))
    func servesTLS() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let made = try await runAsync(which("openssl")!, ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                                                "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                                                "-addext", "subjectAltName=IP:127.0.0.1",
                                                "-keyout", dir.file("key.pem"), "-out", dir.file("cert.pem")])
        #expect(made.status == 0, "\(made.stderr)")
        let server = try await RunningServer {
            $0.tlsCertificate = dir.file("cert.pem")
            $0.tlsKey = dir.file("key.pem")
        }
        let storage = try server.storage("tls", caFile: dir.file("cert.pem"), scheme: "https")
        try await storage.create()
        try await storage.save(Handle(.keys, hexName), data: Data("over tls".utf8))
        #expect(try await storage.load(Handle(.keys, hexName)) == Data("over tls".utf8))
        // Without the CA the server's certificate is refused, not silently accepted.
        let untrusted = try server.storage("tls", scheme: "https")
        await #expect(throws: StorageError.self) { _ = try await untrusted.list(.keys) }
    }
}
