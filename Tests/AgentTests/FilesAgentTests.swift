import AgentClient
import Foundation
import LineProtocol
import Repository
import Storage
import Testing
import TestSupport

@Suite struct FilesAgentTests {
    func makeTree(_ root: String, seed: UInt64) throws {
        var gen = SeededBytes(seed: seed)
        try FileManager.default.createDirectory(atPath: root + "/projects/app/src", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/projects/empty", withIntermediateDirectories: true)
        try gen.text(300_000).write(to: URL(fileURLWithPath: root + "/projects/app/src/main.go"))
        try gen.data(200_000).write(to: URL(fileURLWithPath: root + "/projects/app/blob.bin"))
        try FileManager.default.createSymbolicLink(atPath: root + "/projects/app/link", withDestinationPath: "src/main.go")
        chmod(root + "/projects/app/src/main.go", 0o640)
    }

    @Test func backupWithHooksAndExactRestore() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        try makeTree(dir.file("che-data"), seed: 1)
        try makeTree(dir.file("workspaces"), seed: 2)
        let (url, repo) = try await makeLocalRepository(dir)
        let agent = try await AgentProcess(role: "files", arguments: [
            "--dir", "che-data=\(dir.file("che-data"))", "--dir", "projects=\(dir.file("workspaces"))",
            "--pre-hook", "touch \(dir.file("pre-ran"))", "--post-hook", "touch \(dir.file("post-ran"))",
        ])
        let parts = try await AgentClient.withSession(agent.endpoint, token: token, expectedRole: "files") { session in
            try await session.backup(url: url, secrets: secrets)
        }
        #expect(parts.map(\.name) == ["files/che-data", "files/projects"])
        #expect(FileManager.default.fileExists(atPath: dir.file("pre-ran")) && FileManager.default.fileExists(atPath: dir.file("post-ran")))
        let (snapshotID, _) = try await repo.commitSnapshot(parts: parts)

        // Change things: a stray file, a modified file, a deleted directory.
        try Data("stray".utf8).write(to: URL(fileURLWithPath: dir.file("che-data/projects/stray")))
        try Data("changed".utf8).write(to: URL(fileURLWithPath: dir.file("che-data/projects/app/src/main.go")))
        try FileManager.default.removeItem(atPath: dir.file("workspaces/projects"))
        try makeTree(dir.file("expected-che"), seed: 1)
        _ = try await AgentClient.withSession(agent.endpoint, token: token) { session in
            try await session.restore(url: url, secrets: secrets, snapshot: snapshotID)
        }
        #expect(!FileManager.default.fileExists(atPath: dir.file("che-data/projects/stray")), "files not in the snapshot are removed")
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir.file("che-data/projects/app/src/main.go"))) ==
                Data(contentsOf: URL(fileURLWithPath: dir.file("expected-che/projects/app/src/main.go"))))
        #expect(FileManager.default.fileExists(atPath: dir.file("workspaces/projects/empty")))
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: dir.file("workspaces/projects/app/link")) == "src/main.go")

        // keepExtraneous keeps what the snapshot does not hold.
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: dir.file("che-data/keep")))
        _ = try await AgentClient.withSession(agent.endpoint, token: token) { session in
            try await session.restore(url: url, secrets: secrets, snapshot: snapshotID, keepExtraneous: true)
        }
        #expect(FileManager.default.fileExists(atPath: dir.file("che-data/keep")))
    }

    @Test func aFailingOrHangingHookFailsTheBackupClearly() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        try makeTree(dir.file("data"), seed: 3)
        let (url, repo) = try await makeLocalRepository(dir)
        let failing = try await AgentProcess(role: "files", arguments: ["--dir", "d=\(dir.file("data"))", "--pre-hook", "echo quiesce failed >&2; exit 3"])
        do {
            _ = try await AgentClient.withSession(failing.endpoint, token: token) { try await $0.backup(url: url, secrets: secrets) }
            Issue.record("a failing hook was ignored")
        } catch let error as AgentError {
            #expect(error.code == "source_failed" && error.message.contains("quiesce failed"), "\(error)")
        }
        let hanging = try await AgentProcess(role: "files", arguments: ["--dir", "d=\(dir.file("data"))", "--pre-hook", "sleep 60", "--hook-timeout", "1"])
        do {
            _ = try await AgentClient.withSession(hanging.endpoint, token: token) { try await $0.backup(url: url, secrets: secrets) }
            Issue.record("a hanging hook was ignored")
        } catch let error as AgentError {
            #expect(error.code == "source_failed" && error.message.contains("timed out"), "\(error)")
        }
        #expect(try await repo.listSnapshots().isEmpty)
    }
}

/// A restore into a full disk: a clear `restore_failed` error, and the agent serves on.
@Suite struct FullDiskTests {
    static var canMount: Bool { geteuid() == 0 && FileManager.default.isExecutableFile(atPath: "/bin/mount") }

    func mount(_ path: String, size: String) async throws -> Bool {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return try await runAsync("/bin/mount", ["-t", "tmpfs", "-o", "size=\(size)", "tmpfs", path]).status == 0
    }

    @Test(.enabled(if: canMount))
    func restoreIntoAFullDisk() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let target = dir.file("small-volume")
        try #require(try await mount(target, size: "8m"), "cannot mount a tmpfs as root here")
        defer { _ = try? run("/bin/umount", ["-l", target]) }
        var gen = SeededBytes(seed: 61)
        try gen.data(3_000_000).write(to: URL(fileURLWithPath: target + "/big"))
        let (url, repo) = try await makeLocalRepository(dir)
        let agent = try await AgentProcess(role: "files", arguments: ["--dir", "vol=\(target)"])
        let parts = try await AgentClient.withSession(agent.endpoint, token: token) { try await $0.backup(url: url, secrets: secrets) }
        let (id, _) = try await repo.commitSnapshot(parts: parts)
        // The same directory, now on a volume too small for the data.
        _ = try await runAsync("/bin/umount", [target])
        #expect(try await mount(target, size: "1m"))
        do {
            _ = try await AgentClient.withSession(agent.endpoint, token: token) { try await $0.restore(url: url, secrets: secrets, snapshot: id) }
            Issue.record("a restore into a full disk succeeded")
        } catch let error as AgentError {
            #expect(error.code == "restore_failed", "\(error)")
            #expect(error.message.contains("No space left on device"), "\(error.message)")
        }
        try await AgentClient.withSession(agent.endpoint, token: token) { try await $0.ping() }
    }
}

@Suite struct AuthenticationTests {
    @Test func aControllerWithTheWrongTokenIsRefused() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        try FileManager.default.createDirectory(atPath: dir.file("d"), withIntermediateDirectories: true)
        let agent = try await AgentProcess(role: "files", arguments: ["--dir", "d=\(dir.file("d"))", "-v"])
        let wrong = try SharedToken(Data("some-other-token-Zq8vR2mK9pL4sT8wZ1nB6yC3dF5gH0jQ".utf8))
        do {
            try await AgentClient.withSession(agent.endpoint, token: wrong) { try await $0.ping() }
            Issue.record("a wrong token was accepted")
        } catch let error as AgentError {
            #expect(error.code == "unauthorized", "\(error); the agent's log: \(agent.log)")
        }
    }

    /// An impostor that speaks the protocol but does not know the token: the controller must
    /// notice at `welcome` and send it nothing.
    @Test func anAgentThatCannotProveTheTokenIsRefused() async throws {
        let port = freeLoopbackPort()
        let received = Locked<[String]>([])
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var yes: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        listen(listener, 1)
        let impostor = Thread {
            let fd = accept(listener, nil, nil)
            defer { close(fd); close(listener) }
            let nonce = Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
            let hello = "{\"type\":\"hello\",\"protocols\":[2],\"role\":\"files\",\"agentVersion\":\"x\",\"installationId\":\"x\",\"capabilities\":[],\"nonce\":\"\(nonce)\"}\n"
            _ = hello.withCString { send(fd, $0, strlen($0), 0) }
            var buffer = [UInt8](repeating: 0, count: 65536)
            let n = recv(fd, &buffer, buffer.count, 0)
            if n > 0 { received.withLock { $0.append(String(decoding: buffer[0..<n], as: UTF8.self)) } }
            let welcome = "{\"type\":\"welcome\",\"proof\":\"\(Data(repeating: 7, count: 32).base64EncodedString())\"}\n"
            _ = welcome.withCString { send(fd, $0, strlen($0), 0) }
            let more = recv(fd, &buffer, buffer.count, 0)
            if more > 0 { received.withLock { $0.append(String(decoding: buffer[0..<more], as: UTF8.self)) } }
        }
        impostor.start()
        do {
            _ = try await AgentClient.withSession(.tcp(host: "127.0.0.1", port: port), token: token) { session in
                try await session.backup(url: "local:/tmp/x", secrets: RepositorySecrets(repositoryPassword: "must-not-leak"))
            }
            Issue.record("an impostor agent was accepted")
        } catch let error as AgentError {
            #expect(error.code == "unauthorized", "\(error)")
        }
        while impostor.isExecuting || !impostor.isFinished { try await Task.sleep(for: .milliseconds(10)) }
        let seen = received.value.joined()
        #expect(seen.contains("\"type\":\"auth\""))
        #expect(!seen.contains("backup") && !seen.contains("must-not-leak"), "the impostor got: \(seen)")
        #expect(!seen.contains(tokenText), "the token crossed the wire")
    }
}
