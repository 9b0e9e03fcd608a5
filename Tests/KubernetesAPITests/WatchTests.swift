import Foundation
import KubernetesAPI
import Storage
import Testing
import TestSupport

/// Consumes a watch in a task of its own, keeping every event.
final class WatchRecorder: Sendable {
    let events = Locked<[WatchEvent]>([])
    let task: Task<Void, Never>
    let failure = Locked<String?>(nil)

    init(_ stream: AsyncThrowingStream<WatchEvent, any Error>) {
        let events = self.events
        let failure = self.failure
        task = Task {
            do {
                for try await event in stream { events.withLock { $0.append(event) } }
            } catch {
                failure.withLock { $0 = "\(error)" }
            }
        }
    }

    func names(_ kind: WatchEvent.Kind) -> [String] { events.value.filter { $0.kind == kind }.compactMap(\.object.name) }

    /// Waits until an event of `kind` for `name` has arrived.
    func waitFor(_ kind: WatchEvent.Kind, _ name: String) async throws -> Bool {
        try await eventually { self.names(kind).contains(name) }
    }
}

@Suite(.serialized, .enabled(if: standInAvailable, "needs tests/kube/apiserver.py and python3 with kmock"))
struct WatchTests {
    @Test func listsFirstThenStreamsChanges() async throws {
        let server = try await KubeAPIServer()
        let kube = KubeClient(config: try server.config(), logger: quietLogger)
        _ = try await kube.create(.configMaps, ["metadata": ["name": "a"]])
        _ = try await kube.create(.configMaps, ["metadata": ["name": "b"]])
        let recorder = WatchRecorder(kube.watch(.configMaps))
        defer { recorder.task.cancel() }
        #expect(try await recorder.waitFor(.added, "b"))
        _ = try await kube.create(.configMaps, ["metadata": ["name": "c"]])
        _ = try await kube.patch(.configMaps, "a", ["data": ["k": "v"]])
        #expect(try await kube.delete(.configMaps, "b"))
        #expect(try await recorder.waitFor(.deleted, "b"))
        let seen = recorder.events.value.map { "\($0.kind.rawValue) \($0.object.name ?? "?")" }
        #expect(seen == ["ADDED a", "ADDED b", "ADDED c", "MODIFIED a", "DELETED b"])
        #expect(recorder.events.value[3].object["data"] == ["k": "v"])
        #expect(recorder.failure.value == nil)
    }

    @Test func labelSelectorsAndOtherNamespacesAreRespected() async throws {
        let server = try await KubeAPIServer()
        let kube = KubeClient(config: try server.config(), logger: quietLogger)
        _ = try await kube.create(.namespaces, ["metadata": ["name": "other"]])
        let recorder = WatchRecorder(kube.watch(.secrets, labelSelector: "pick=yes"))
        defer { recorder.task.cancel() }
        _ = try await kube.create(.secrets, ["metadata": ["name": "no", "labels": ["pick": "no"]]])
        _ = try await kube.create(.secrets, ["metadata": ["name": "elsewhere", "labels": ["pick": "yes"]]], namespace: "other")
        _ = try await kube.create(.secrets, ["metadata": ["name": "yes", "labels": ["pick": "yes"]]])
        #expect(try await recorder.waitFor(.added, "yes"))
        #expect(recorder.names(.added) == ["yes"])
        let everywhere = WatchRecorder(kube.watch(.secrets, namespace: KubeClient.allNamespaces, labelSelector: "pick=yes"))
        defer { everywhere.task.cancel() }
        #expect(try await eventually { Set(everywhere.names(.added)) == ["yes", "elsewhere"] })
    }

    /// Broken streams, an expired history (410 after a compaction) and a server restart: every
    /// object created meanwhile is emitted exactly once, every deletion once.
    @Test func survivesBrokenStreamsCompactionAndRestarts() async throws {
        let server = try await KubeAPIServer(state: true, arguments: ["--bookmark-interval", "3600"])
        let kube = KubeClient(config: try server.config(), logger: quietLogger)
        _ = try await kube.create(.namespaces, ["metadata": ["name": "other"]])
        _ = try await kube.create(.configMaps, ["metadata": ["name": "x0"]])
        let recorder = WatchRecorder(kube.watch(.configMaps))
        defer { recorder.task.cancel() }
        #expect(try await recorder.waitFor(.added, "x0"))

        // 1. The stream is cut (once it is open); a creation right after it is not lost.
        #expect(try await eventually { try await server.hook("/_fault/break-watches")["broken"]?.int == 1 })
        _ = try await kube.create(.configMaps, ["metadata": ["name": "x1"]])
        #expect(try await recorder.waitFor(.added, "x1"))

        // 2. The server forgets history older than now while our resourceVersion lags (changes
        //    in a namespace we do not watch, no bookmarks): the reconnect gets 410 and relists.
        for i in 0..<3 { _ = try await kube.create(.configMaps, ["metadata": ["name": .string("o\(i)")]], namespace: "other") }
        try await server.hook("/_fault/compact")
        try await server.hook("/_fault/break-watches")
        _ = try await kube.create(.configMaps, ["metadata": ["name": "x2"]])
        #expect(try await kube.delete(.configMaps, "x0"))
        #expect(try await recorder.waitFor(.added, "x2"))
        #expect(try await recorder.waitFor(.deleted, "x0"))
        let lists = try await logged(server, "/api/v1/namespaces/eclipse-che/configmaps").filter {
            $0["method"] == "GET" && $0["path"]?.string?.contains("watch=") == false
        }
        #expect(lists.count >= 2, "the 410 made the watch list again")

        // 3. The server crashes and comes back (same port, same state, no watch history).
        for i in 3..<5 { _ = try await kube.create(.configMaps, ["metadata": ["name": .string("o\(i)")]], namespace: "other") }
        server.stop()
        try await server.start()
        _ = try await kube.create(.configMaps, ["metadata": ["name": "x3"]])
        #expect(try await kube.delete(.configMaps, "x1"))
        #expect(try await recorder.waitFor(.added, "x3"))
        #expect(try await recorder.waitFor(.deleted, "x1"))

        // A last marker: everything before it has arrived; nothing came twice.
        _ = try await kube.create(.configMaps, ["metadata": ["name": "z-last"]])
        #expect(try await recorder.waitFor(.added, "z-last"))
        #expect(recorder.names(.added).sorted() == ["x0", "x1", "x2", "x3", "z-last"])
        #expect(recorder.names(.deleted).sorted() == ["x0", "x1"])
        #expect(recorder.names(.modified).isEmpty)
        #expect(recorder.failure.value == nil)
    }

    /// Bookmarks carry the server's resourceVersion past changes the watch does not see: after a
    /// compaction at that version, the reconnect resumes without a 410 and without listing again.
    @Test func bookmarksAdvanceTheResourceVersionSilently() async throws {
        let server = try await KubeAPIServer(arguments: ["--bookmark-interval", "0.2"])
        let kube = KubeClient(config: try server.config(), logger: quietLogger)
        _ = try await kube.create(.namespaces, ["metadata": ["name": "other"]])
        let recorder = WatchRecorder(kube.watch(.configMaps))
        defer { recorder.task.cancel() }
        _ = try await kube.create(.configMaps, ["metadata": ["name": "elsewhere"]], namespace: "other")
        try await Task.sleep(for: .seconds(3))  // many bookmark intervals
        #expect(recorder.events.value.isEmpty)  // bookmarks emit nothing
        try await server.hook("/_fault/compact")
        #expect(try await server.hook("/_fault/break-watches")["broken"]?.int == 1)
        _ = try await kube.create(.configMaps, ["metadata": ["name": "marker"]])
        #expect(try await recorder.waitFor(.added, "marker"))
        let lists = try await logged(server, "/api/v1/namespaces/eclipse-che/configmaps?").filter {
            $0["method"] == "GET" && $0["path"]?.string?.contains("watch=") == false
        }
        #expect(lists.count == 1, "resumed without a relist")
        #expect(recorder.events.value.map(\.kind) == [.added])
    }

    @Test func cancellingTheConsumerEndsTheWatchAndItsTransfer() async throws {
        // No bookmarks: nothing arrives on the idle stream, so only the client's own abort can end it.
        let server = try await KubeAPIServer(arguments: ["--bookmark-interval", "3600"])
        let kube = KubeClient(config: try server.config(), logger: quietLogger)
        _ = try await kube.create(.configMaps, ["metadata": ["name": "a"]])
        let recorder = WatchRecorder(kube.watch(.configMaps))
        #expect(try await recorder.waitFor(.added, "a"))
        try await Task.sleep(for: .seconds(1))  // the watch request has been opened after the list
        recorder.task.cancel()
        await recorder.task.value
        // The client closed its connection and did not reconnect: no watch is open. (Without the
        // abort the idle request would stay open for minutes.)
        try await Task.sleep(for: .seconds(5))
        #expect(try await server.hook("/_fault/break-watches")["broken"]?.int == 0)
    }
}
