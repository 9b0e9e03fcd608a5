import Foundation
@testable import LineProtocol
import Repository
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
        #expect(items == [.line(Data("short".utf8)), .tooLong(100_000), .line(Data("after".utf8))])
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
    let token = try! SharedToken(Data("0123456789abcdef0123456789abcdef\n".utf8))

    @Test func bothEndsProveTheTokenAndAgreeOnTheSessionKey() throws {
        let a = SharedToken.newNonce()
        let c = SharedToken.newNonce()
        let other = try SharedToken(Data("another token of enough length".utf8))
        #expect(token.controllerProof(agentNonce: a, controllerNonce: c) != other.controllerProof(agentNonce: a, controllerNonce: c))
        #expect(token.controllerProof(agentNonce: a, controllerNonce: c) != token.agentProof(agentNonce: a, controllerNonce: c))
        #expect(token.controllerProof(agentNonce: a, controllerNonce: c) != token.controllerProof(agentNonce: SharedToken.newNonce(), controllerNonce: c))
        var secrets = RepositorySecrets(repositoryPassword: "repo-secret")
        secrets.awsSecretAccessKey = "aws-secret"
        let key = token.sessionKey(agentNonce: a, controllerNonce: c)
        let sealed = key.seal(secrets, requestID: "r1")
        #expect(!sealed.box.contains("repo-secret") && !(Data(base64Encoded: sealed.box).map { String(decoding: $0, as: UTF8.self) } ?? "").contains("repo-secret"))
        #expect(try key.open(sealed, requestID: "r1") == secrets)
        #expect(throws: ErrorMessage.self) { try key.open(sealed, requestID: "r2") }
        #expect(throws: ErrorMessage.self) { try token.sessionKey(agentNonce: c, controllerNonce: a).open(sealed, requestID: "r1") }
    }

    @Test func shortTokensAreRefused() {
        #expect(throws: ErrorMessage.self) { try SharedToken(Data("short".utf8)) }
    }

    @Test func versionNegotiation() {
        #expect(negotiateVersion(offered: [1, 2]) == 1)
        #expect(negotiateVersion(offered: [7]) == nil)
    }
}
