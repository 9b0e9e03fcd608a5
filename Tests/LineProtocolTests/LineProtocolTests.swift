import Foundation
@testable import LineProtocol
import Repository
import Storage
import Testing
import TestSupport

@Suite struct LineFramerTests {
    func lines(_ input: Data, chunks: [Int], max: Int = 64) -> [LineFramer.Item] {
        var framer = LineFramer(maxLineLength: max)
        var items: [LineFramer.Item] = []
        var offset = 0
        var i = 0
        while offset < input.count {
            let n = Swift.max(1, Swift.min(chunks[i % chunks.count], input.count - offset))
            items += framer.feed(input[offset..<offset + n])
            offset += n
            i += 1
        }
        return items
    }

    @Test func sameLinesWhateverTheChunking() {
        let input = Data("{\"a\":1}\n\n{\"b\":2}\r\nlast\n".utf8)
        let expected: [LineFramer.Item] = [.line(Data("{\"a\":1}".utf8)), .line(Data()), .line(Data("{\"b\":2}".utf8)), .line(Data("last".utf8))]
        var gen = SeededBytes(seed: 9)
        for _ in 0..<200 {
            let chunks = (0..<5).map { _ in Int(gen.next() % 7) + 1 }
            #expect(lines(input, chunks: chunks) == expected, "chunks \(chunks)")
        }
    }

    @Test func oversizeLinesAreReportedAndSkippedWithBoundedMemory() {
        var framer = LineFramer(maxLineLength: 16)
        var items = framer.feed(Data("short\n".utf8))
        for _ in 0..<1000 {
            items += framer.feed(Data(repeating: 0x41, count: 100))
            #expect(framer.pending <= 16)
        }
        items += framer.feed(Data("\nafter\n".utf8))
        #expect(items == [.line(Data("short".utf8)), .tooLong(17), .line(Data("after".utf8))])
    }

    /// A peer that never ends its line must still get an answer: the report comes when the line
    /// passes the limit, not at a newline that may never arrive.
    @Test func anUnterminatedOversizeLineIsReportedAtTheLimit() {
        var framer = LineFramer(maxLineLength: 16)
        #expect(framer.feed(Data(repeating: 0x41, count: 16)).isEmpty)
        #expect(framer.feed(Data([0x41])) == [.tooLong(17)])
        #expect(framer.feed(Data(repeating: 0x41, count: 10_000)).isEmpty, "reported once")
        #expect(framer.pending == 0)
    }

    @Test func errorMessagesStayOneLineWhateverTheyQuote() {
        let e = ErrorMessage(code: .unknownRequest, message: "no running request no\r\nthing\u{1b}[2J")
        #expect(e.message == "no running request no\\r\\nthing\\u{1b}[2J")
        #expect(!LineCodec.encode(.error(e)).contains(0x0A))
    }

    @Test func anIncompleteLineWaits() {
        var framer = LineFramer()
        #expect(framer.feed(Data("{\"type\":".utf8)).isEmpty)
        #expect(framer.feed(Data("\"ping\"}\n".utf8)) == [.line(Data("{\"type\":\"ping\"}".utf8))])
    }
}

@Suite struct CodecTests {
    @Test func everyMessageRoundTrips() throws {
        let spec = RepositorySpec(url: "rest:http://127.0.0.1:8000/che/", secrets: SealedSecrets(box: "AAAA"))
        let messages: [Message] = [
            .hello(Hello(protocols: [1], role: "postgres", agentVersion: "0.1.0", installationId: "inst", capabilities: ["backup"], nonce: "bm9uY2U=")),
            .auth(Auth(protocol: 1, nonce: "x", proof: "y")),
            .welcome(Welcome(proof: "z")),
            .backup(BackupRequest(id: "1", repository: spec, parts: ["postgres/dbche"])),
            .restore(RestoreRequest(id: "2", repository: spec, snapshot: String(repeating: "a", count: 64), keepExtraneous: true)),
            .status(Simple(id: "3")), .ping(Simple(id: "4")), .cancel(Cancel(id: "5", target: "1")),
            .event(Event(id: "1", stage: "dumping dbche", bytes: 10, items: 1, totalBytes: nil)),
            .result(ResultMessage(id: "3", state: "idle")),
            .error(ErrorMessage(id: "1", code: .busy, message: "a backup is running")),
        ]
        for message in messages {
            let line = LineCodec.encode(message)
            #expect(!line.contains(0x0A), "a message must fit on one line")
            #expect(try LineCodec.decode(line).get() == message)
        }
    }

    @Test(arguments: [
        ("not json at all", "bad_json"),
        ("[1,2,3]", "bad_json"),
        ("{\"type\":\"explode\",\"id\":\"7\"}", "unknown_type"),
        ("{\"id\":\"7\"}", "invalid_request"),
        ("{\"type\":\"backup\",\"id\":\"7\"}", "invalid_request"),
        ("{\"type\":\"ping\",\"id\":7}", "invalid_request"),
        ("\u{00}\u{ff}\u{fe}", "bad_json"),
    ])
    func malformedLinesGetStableCodes(line: String, code: String) {
        guard case .failure(let error) = LineCodec.decode(Data(line.utf8)) else {
            Issue.record("\(line) was accepted")
            return
        }
        #expect(error.code == code, "\(line): \(error.message)")
    }

    @Test func unknownFieldsAreIgnored() throws {
        let line = Data("{\"type\":\"ping\",\"id\":\"1\",\"future\":{\"x\":1}}".utf8)
        #expect(try LineCodec.decode(line).get() == .ping(Simple(id: "1")))
    }
}

@Suite struct HandshakeTests {
    let token = try! SharedToken(Data("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n".utf8))
    let hello = Data("{\"type\":\"hello\",\"protocols\":[2]}".utf8)

    @Test func bothEndsProveTheTokenAndAgreeOnTheSessionKey() throws {
        let a = SharedToken.newNonce()
        let c = SharedToken.newNonce()
        let other = try SharedToken(Data("another token: Xq7vR2mK9pL4sT8wZ1nB6yC3dF5gH0jQ".utf8))
        func proof(_ t: SharedToken, _ a: Data, _ c: Data, hello: Data? = nil, version: Int = 2) -> Data {
            t.controllerProof(agentNonce: a, controllerNonce: c, hello: hello ?? self.hello, version: version)
        }
        #expect(proof(token, a, c) != proof(other, a, c))
        #expect(proof(token, a, c) != token.agentProof(agentNonce: a, controllerNonce: c, hello: hello, version: 2))
        #expect(proof(token, a, c) != proof(token, SharedToken.newNonce(), c))
        // The proofs cover the hello line and the version: a changed hello or a downgrade fails.
        #expect(proof(token, a, c) != proof(token, a, c, hello: Data("{\"type\":\"hello\",\"protocols\":[1]}".utf8)))
        #expect(proof(token, a, c) != proof(token, a, c, version: 1))
        var secrets = RepositorySecrets(repositoryPassword: "repo-secret")
        secrets.awsSecretAccessKey = "aws-secret"
        let key = token.sessionKeys(agentNonce: a, controllerNonce: c).sealing
        let sealed = key.seal(secrets, requestID: "r1")
        #expect(!sealed.box.contains("repo-secret") && !(Data(base64Encoded: sealed.box).map { String(decoding: $0, as: UTF8.self) } ?? "").contains("repo-secret"))
        #expect(try key.open(sealed, requestID: "r1") == secrets)
        #expect(throws: ErrorMessage.self) { try key.open(sealed, requestID: "r2") }
        #expect(throws: ErrorMessage.self) { try token.sessionKeys(agentNonce: c, controllerNonce: a).sealing.open(sealed, requestID: "r1") }
    }

    @Test(arguments: ["short", "agent-test-token-0123456789abcdef", "0123456789abcdef0123456789abcdef",
                      String(repeating: "ab", count: 64), "correct horse battery staple"])
    func weakTokensAreRefused(text: String) {
        #expect(throws: ErrorMessage.self) { try SharedToken(Data(text.utf8)) }
    }

    @Test func tokensOf32RandomBytesAreAccepted() throws {
        for _ in 0..<50 {
            let bytes = Primitives.random(32)
            _ = try SharedToken(Data(bytes.map { String(format: "%02x", $0) }.joined().utf8))
            _ = try SharedToken(Data((bytes.base64EncodedString() + "\n").utf8))
        }
    }

    @Test func tokenFilesOthersCanReadGetAWarning() throws {
        let dir = try PrivateDirectory(prefix: "chebackup-token-test")
        let path = dir.path + "/token"
        #expect(FileManager.default.createFile(atPath: path, contents: Data("x".utf8), attributes: [.posixPermissions: 0o600]))
        #expect(SharedToken.permissionWarning(file: path) == nil)
        chmod(path, 0o644)
        #expect(SharedToken.permissionWarning(file: path)?.contains("readable by every user") == true)
        chmod(path, 0o640)
        // Group-readable is fine when the group is ours (a Secret mounted with fsGroup).
        #expect(SharedToken.permissionWarning(file: path) == nil)
        chown(path, getuid(), 4242)
        if fileStat(path)?.st_gid == 4242 {
            #expect(SharedToken.permissionWarning(file: path)?.contains("group 4242") == true)
        }
    }

    /// Known hosts and CA files go into a directory made new (mode 0700) for the request, never a
    /// predictable one that another user of a shared /tmp could have made first.
    @Test func credentialFilesGoIntoAFreshPrivateDirectory() throws {
        var secrets = RepositorySecrets(repositoryPassword: "pw")
        secrets.sshKnownHosts = "host ssh-ed25519 AAAA"
        secrets.caCertificate = "-----BEGIN CERTIFICATE-----"
        let dir = try PrivateDirectory(prefix: "chebackup-agent")
        #expect(fileStat(dir.path).map { $0.st_mode & 0o777 } == 0o700)
        let credentials = try secrets.backendCredentials(filesIn: dir)
        #expect(credentials.sshKnownHosts == dir.path + "/known_hosts" && credentials.caFile == dir.path + "/ca.pem")
        #expect(fileStat(dir.path + "/known_hosts").map { $0.st_mode & 0o777 } == 0o600)
        #expect(try String(contentsOfFile: dir.path + "/known_hosts", encoding: .utf8) == "host ssh-ed25519 AAAA")
        // A file planted where ours goes is never used: writing refuses it.
        #expect(throws: ErrorMessage.self) { try secrets.backendCredentials(filesIn: dir) }
        #expect(try PrivateDirectory(prefix: "chebackup-agent").path != dir.path)
    }

    func fileStat(_ path: String) -> Foundation.stat? {
        var st = Foundation.stat()
        return lstat(path, &st) == 0 ? st : nil
    }

    @Test func versionNegotiation() {
        #expect(negotiateVersion(offered: [1, 2]) == 2)
        #expect(negotiateVersion(offered: [1]) == nil, "version 1 has no per-line MAC: never spoken")
        #expect(negotiateVersion(offered: [7]) == nil)
    }
}

@Suite struct AuthenticatedLinesTests {
    let keys = try! SharedToken(Data("5f3a9c7e1d0b24886af1c3d9e0b7a25c4f6e8d1a3b5c7e9f0a2b4c6d8e1f3a5b".utf8)).sessionKeys(agentNonce: SharedToken.newNonce(),
                                                                                                controllerNonce: SharedToken.newNonce())
    let messages: [Message] = [.ping(Simple(id: "p1")), .status(Simple(id: "s1")), .cancel(Cancel(id: "c1", target: "b1")),
                               .restore(RestoreRequest(id: "r1", repository: RepositorySpec(url: "rest:http://a:1/", secrets: SealedSecrets(box: "AA")),
                                                       snapshot: String(repeating: "a", count: 64)))]

    func sealed() -> [Data] {
        var sealer = keys.controllerSide.sealer
        return messages.map { sealer.seal($0) }
    }

    func openAll(_ lines: [Data]) -> [LineOpener.Opened] {
        var opener = keys.agentSide.opener
        return lines.map { opener.open($0) }
    }

    func isTampered(_ o: LineOpener.Opened) -> Bool {
        if case .tampered = o { return true }
        return false
    }

    @Test func linesInOrderOpen() {
        #expect(openAll(sealed()) == messages.map { .message($0) })
    }

    @Test func aChangedLineIsRefusedAndEverythingAfterIt() throws {
        var lines = sealed()
        // Point the restore at another snapshot, keeping the envelope well-formed.
        var object = try #require(try JSONSerialization.jsonObject(with: lines[3]) as? [String: Any])
        object["msg"] = (object["msg"] as! String).replacingOccurrences(of: "aaaa", with: "bbbb")
        lines[3] = try JSONSerialization.data(withJSONObject: object)
        let opened = openAll(lines)
        #expect(opened[0..<3].allSatisfy { !isTampered($0) })
        guard case .tampered(let why) = opened[3] else { Issue.record("accepted: \(opened[3])"); return }
        #expect(why.contains("line 3 from the controller failed its integrity check"))
    }

    @Test func droppedReplayedReorderedAndReflectedLinesAreRefused() {
        let lines = sealed()
        let dropped = openAll([lines[0], lines[2]])
        guard case .tampered(let gap) = dropped[1] else { Issue.record("a gap was accepted"); return }
        #expect(gap.contains("missing"))
        let replayed = openAll([lines[0], lines[1], lines[1]])
        guard case .tampered(let replay) = replayed[2] else { Issue.record("a replay was accepted"); return }
        #expect(replay.contains("replay"))
        #expect(isTampered(openAll([lines[1], lines[0]])[0]))
        // A controller's line sent back to it as if the agent had sent it: the keys differ.
        var controllerOpener = keys.controllerSide.opener
        #expect(isTampered(controllerOpener.open(lines[0])))
        // A plain line where an envelope must be.
        #expect(isTampered(openAll([LineCodec.encode(messages[0])])[0]))
        // After one failure, nothing more opens, not even the right next line.
        var opener = keys.agentSide.opener
        _ = opener.open(lines[1])
        #expect(isTampered(opener.open(lines[0])))
    }

    @Test func anAuthenticLineWithABadMessageIsAnsweredNotFatal() {
        // Build an envelope around a malformed message with the real key.
        let msg = Data("{\"type\":\"ping\",\"id\":7}".utf8)
        let mac = Envelope.mac(key: keys.controllerLines, seq: 0, msg: msg).base64EncodedString()
        let line = try! JSONEncoder().encode(Envelope(seq: 0, msg: String(decoding: msg, as: UTF8.self), mac: mac))
        guard case .invalid(let error) = openAll([line])[0] else { Issue.record("not answered as invalid"); return }
        #expect(error.code == "invalid_request")
    }

    @Test func queuedLinesKeepTheirOrderAndNoEventFollowsAFinalAnswer() async {
        let out = OutboundLines()
        out.send(.hello(Hello(protocols: [2], role: "files", agentVersion: "x", installationId: "i", capabilities: [], nonce: "n")))
        out.startSealing(keys.agentSide.sealer)
        // Many senders at once: the sequence numbers on the wire are still 0, 1, 2, …
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<200 {
                group.addTask { out.send(.event(Event(id: "b\(i % 4)", stage: "s", bytes: Int64(i), items: 0))) }
            }
        }
        #expect(out.send(.result(ResultMessage(id: "b1"))))
        #expect(!out.send(.event(Event(id: "b1", stage: "late", bytes: 0, items: 0))), "an event after the result is dropped")
        #expect(out.send(.event(Event(id: "b2", stage: "still running", bytes: 0, items: 0))))
        out.finish()
        #expect(!out.send(.ping(Simple(id: "after"))))
        var lines: [Data] = []
        for await line in out.lines { lines.append(line.dropLast()) }
        #expect(lines.count == 1 + 200 + 2)
        #expect(lines[0].starts(with: Data("{\"agentVersion\"".utf8)), "the hello goes out plain")
        var opener = keys.controllerSide.opener
        for line in lines.dropFirst() {
            guard case .message = opener.open(line) else { Issue.record("line did not open in order"); return }
        }
    }
}
