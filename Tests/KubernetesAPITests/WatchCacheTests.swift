import Foundation
@testable import KubernetesAPI
import Testing

func object(_ name: String, rv: String, uid: String = "u", ns: String = "che", _ extra: JSON = [:]) -> JSON {
    var o: JSON = ["metadata": ["name": .string(name), "namespace": .string(ns), "resourceVersion": .string(rv), "uid": .string(uid)]]
    for (k, v) in extra.object ?? [:] { o[k] = v }
    return o
}

@Suite struct WatchCacheTests {
    @Test func listThenEventsEmitEachVersionOnce() {
        var cache = WatchCache()
        #expect(cache.resourceVersion == nil)
        let first = cache.listed([object("a", rv: "1"), object("b", rv: "2")], resourceVersion: "5")
        #expect(first.map(\.kind) == [.added, .added])
        #expect(cache.resourceVersion == "5")
        // A replay of what the list showed emits nothing; a new version emits a modification.
        #expect(cache.apply(type: "ADDED", object: object("a", rv: "1")) == .emit([]))
        #expect(cache.apply(type: "MODIFIED", object: object("a", rv: "6")) == .emit([WatchEvent(.modified, object("a", rv: "6"))]))
        #expect(cache.resourceVersion == "6")
        #expect(cache.apply(type: "ADDED", object: object("c", rv: "7")) == .emit([WatchEvent(.added, object("c", rv: "7"))]))
        // An older version replayed after a reconnect is not emitted.
        #expect(cache.apply(type: "MODIFIED", object: object("a", rv: "3")) == .emit([]))
        #expect(cache.apply(type: "DELETED", object: object("b", rv: "8")) == .emit([WatchEvent(.deleted, object("b", rv: "8"))]))
        #expect(cache.apply(type: "DELETED", object: object("b", rv: "8")) == .emit([]))  // already gone
        #expect(cache.objects.keys.sorted() == ["che/a", "che/c"])
    }

    @Test func relistEmitsOnlyDifferencesAndDeletions() {
        var cache = WatchCache()
        _ = cache.listed([object("a", rv: "1"), object("b", rv: "2"), object("c", rv: "3")], resourceVersion: "3")
        let events = cache.listed([object("a", rv: "1"), object("b", rv: "9"), object("d", rv: "10")], resourceVersion: "10")
        #expect(events == [WatchEvent(.deleted, object("c", rv: "3")), WatchEvent(.modified, object("b", rv: "9")),
                           WatchEvent(.added, object("d", rv: "10"))])
        #expect(cache.listed([object("a", rv: "1"), object("b", rv: "9"), object("d", rv: "10")], resourceVersion: "10").isEmpty)
    }

    @Test func aRecreatedObjectIsDeletedThenAdded() {
        var cache = WatchCache()
        _ = cache.listed([object("a", rv: "1", uid: "old")], resourceVersion: "1")
        let events = cache.listed([object("a", rv: "4", uid: "new")], resourceVersion: "4")
        #expect(events == [WatchEvent(.deleted, object("a", rv: "1", uid: "old")), WatchEvent(.added, object("a", rv: "4", uid: "new"))])
        #expect(cache.apply(type: "ADDED", object: object("a", rv: "6", uid: "newer")).count == 2)
    }

    @Test func sameNameInTwoNamespacesAreTwoObjects() {
        var cache = WatchCache()
        let events = cache.listed([object("a", rv: "1", ns: "x"), object("a", rv: "2", ns: "y")], resourceVersion: "2")
        #expect(events.count == 2)
    }

    @Test func bookmarksAndErrors() {
        var cache = WatchCache()
        _ = cache.listed([], resourceVersion: "1")
        #expect(cache.apply(type: "BOOKMARK", object: ["kind": "Secret", "metadata": ["resourceVersion": "40"]]) == .emit([]))
        #expect(cache.resourceVersion == "40")
        #expect(cache.apply(type: "ERROR", object: ["kind": "Status", "code": 410, "reason": "Expired", "message": "too old"]) == .gone)
        #expect(cache.apply(type: "ERROR", object: ["kind": "Status", "reason": "Expired"]) == .gone)
        #expect(cache.apply(type: "ERROR", object: ["kind": "Status", "code": 500, "message": "boom"]) == .failed("boom"))
        if case .failed(let text) = cache.apply(type: "SURPRISE", object: [:]) {
            #expect(text.contains("SURPRISE"))
        } else {
            Issue.record("an unknown event type must fail the stream")
        }
        #expect(cache.resourceVersion == "40")
    }
}

extension WatchCache.Outcome {
    var count: Int {
        if case .emit(let events) = self { return events.count }
        return -1
    }
}

@Suite struct LineSplitterTests {
    static let text = #"{"type":"ADDED","object":{"a":1}}"# + "\n" + #"{"type":"BOOKMARK"}"# + "\r\n\n" + #"{"x":"é"}"# + "\n"

    func split(_ bytes: [UInt8], pieces: Int) throws -> [String] {
        var splitter = LineSplitter(limit: 1 << 20)
        var lines: [String] = []
        var start = 0
        while start < bytes.count {
            let end = min(bytes.count, start + pieces)
            lines += try bytes[start..<end].withUnsafeBytes { try splitter.feed($0) }.map { String(decoding: $0, as: UTF8.self) }
            start = end
        }
        #expect(splitter.buffered == 0)
        return lines
    }

    @Test func anyChunkingGivesTheSameLines() throws {
        let bytes = Array(Self.text.utf8)
        let expected = [#"{"type":"ADDED","object":{"a":1}}"#, #"{"type":"BOOKMARK"}"# + "\r", #"{"x":"é"}"#]
        for size in 1...bytes.count {
            #expect(try split(bytes, pieces: size) == expected, "pieces of \(size)")
        }
    }

    @Test func anUnfinishedLineWaits() throws {
        var splitter = LineSplitter(limit: 100)
        #expect(try Array("{\"a\":".utf8).withUnsafeBytes { try splitter.feed($0) }.isEmpty)
        #expect(splitter.buffered == 5)
        let lines = try Array("1}\n{".utf8).withUnsafeBytes { try splitter.feed($0) }
        #expect(lines.map { String(decoding: $0, as: UTF8.self) } == [#"{"a":1}"#])
        #expect(splitter.buffered == 1)
    }

    @Test func aLineOverTheLimitFails() {
        var splitter = LineSplitter(limit: 10)
        let error = #expect(throws: KubeError.self) {
            try Array(repeating: UInt8(ascii: "x"), count: 11).withUnsafeBytes { _ = try splitter.feed($0) }
        }
        #expect(error?.code == .invalid)
    }
}

@Suite struct BackoffTests {
    @Test func growsWithJitterUpToTheMaximumAndResets() {
        var backoff = Backoff(base: 0.2, max: 10)
        for n in 0..<12 {
            let ceiling = min(10, 0.2 * pow(2, Double(n)))
            let delay = backoff.next()
            #expect(delay >= .milliseconds(Int(ceiling * 500)) && delay <= .milliseconds(Int(ceiling * 1000)), "step \(n): \(delay)")
        }
        backoff.reset()
        #expect(backoff.next() <= .milliseconds(200))
    }
}
