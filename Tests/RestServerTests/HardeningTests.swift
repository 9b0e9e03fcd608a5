import Foundation
@testable import RestServer
import Synchronization
import Testing
import TestSupport

/// Runs an action once, the first time a hook fires (later calls, such as the racing request's
/// own, pass straight through).
final class OnceAction: Sendable {
    private let state = Mutex<(@Sendable () async -> Void)?>(nil)
    func set(_ action: @escaping @Sendable () async -> Void) { state.withLock { $0 = action } }
    func fire() async {
        let action = state.withLock { value -> (@Sendable () async -> Void)? in
            defer { value = nil }
            return value
        }
        await action?()
    }
}

/// A value that escaping closures share.
final class Shared<T: Sendable>: Sendable {
    let value: Mutex<T>
    init(_ initial: T) { value = Mutex(initial) }
}

let otherHex = String(repeating: "cd", count: 32)

@Suite struct HardeningTests {
    static let appendOnlyPaths = ["/r/keys/\(hexName)", "/r/config", "/r/data/\(hexName)",
                                  "/r/snapshots/\(hexName)", "/r/index/\(hexName)"]

    /// Item 12: an upload that started before the file existed must not replace it once it
    /// finishes. The race is made deterministic: a second upload of the same name runs, and
    /// completes, between the first one's write and its placement.
    @Test(arguments: appendOnlyPaths)
    func appendOnlyPlacementIsAtomicAgainstARacingUpload(path: String) async throws {
        let once = OnceAction()
        let server = try await RunningServer {
            $0.appendOnly = true
            $0.hooks.beforePlacement = { _ in await once.fire() }
        }
        _ = try await server.raw("POST", "/r/?create=true")
        let racer = Shared<Int?>(nil)
        once.set {
            let status = (try? await server.raw("POST", path, body: Data("second".utf8)))?.0
            racer.value.withLock { $0 = status }
        }
        let (first, _) = try await server.raw("POST", path, body: Data("first".utf8))
        #expect(racer.value.withLock { $0 } == 200)
        #expect(first == 403, "the racing upload replaced an existing file in append-only mode")
        let (status, body) = try await server.raw("GET", path)
        #expect(status == 200 && body == "second")
        let leftovers = try FileManager.default.subpathsOfDirectory(atPath: server.dir.path + "/repos/r").filter {
            ($0 as NSString).lastPathComponent.hasPrefix(".upload-")
        }
        #expect(leftovers.isEmpty, "temporary files left: \(leftovers)")
    }

    /// Without append-only, the later placement replaces (restic rewrites locks and, in prune,
    /// expects a repeated upload to succeed); locks keep that in append-only mode too.
    @Test(arguments: [false, true])
    func replaceSemanticsStayWhereTheProtocolExpectsThem(appendOnly: Bool) async throws {
        let once = OnceAction()
        let server = try await RunningServer {
            $0.appendOnly = appendOnly
            $0.hooks.beforePlacement = { _ in await once.fire() }
        }
        _ = try await server.raw("POST", "/r/?create=true")
        let path = appendOnly ? "/r/locks/\(hexName)" : "/r/keys/\(hexName)"
        once.set { _ = try? await server.raw("POST", path, body: Data("second".utf8)) }
        let (first, _) = try await server.raw("POST", path, body: Data("first".utf8))
        #expect(first == 200)
        #expect(try await server.raw("GET", path).1 == "first")
    }

    /// Item 13: links inside the root are never followed out of it, for reads, writes, lists,
    /// deletes and creates.
    @Test func symbolicLinksAreNotFollowedOutOfTheRoot() async throws {
        let server = try await RunningServer()
        let root = server.dir.path + "/repos"
        let outside = server.dir.path + "/outside"
        let fm = FileManager.default
        for sub in ["keys", "data/ab", "snapshots", "index", "locks"] {
            try fm.createDirectory(atPath: outside + "/" + sub, withIntermediateDirectories: true)
        }
        try "secret-config".write(toFile: outside + "/config", atomically: false, encoding: .utf8)
        try "secret-key".write(toFile: outside + "/keys/\(hexName)", atomically: false, encoding: .utf8)
        try "secret-pack".write(toFile: outside + "/data/ab/\(hexName)", atomically: false, encoding: .utf8)
        _ = try await server.raw("POST", "/r/?create=true")
        try fm.createSymbolicLink(atPath: root + "/evil", withDestinationPath: outside)
        try fm.removeItem(atPath: root + "/r/data/ab")
        try fm.createSymbolicLink(atPath: root + "/r/data/ab", withDestinationPath: outside + "/data/ab")
        try fm.createSymbolicLink(atPath: root + "/r/keys/\(hexName)", withDestinationPath: outside + "/keys/\(hexName)")

        for path in ["/evil/config", "/evil/keys/\(hexName)", "/r/keys/\(hexName)", "/r/data/\(hexName)"] {
            let (status, body) = try await server.raw("GET", path)
            #expect(status != 200 && !body.contains("secret"), "GET \(path): \(status) \(body)")
        }
        for path in ["/evil/keys/", "/r/data/"] {
            let (_, body) = try await server.raw("GET", path)
            #expect(!body.contains(hexName), "GET \(path) listed a file outside the root: \(body)")
        }
        for path in ["/evil/keys/\(otherHex)", "/evil/config", "/r/data/\(String(repeating: "ab", count: 31))ee"] {
            _ = try await server.raw("POST", path, body: Data("written".utf8))
        }
        #expect(!fm.fileExists(atPath: outside + "/keys/\(otherHex)"))
        #expect(try String(contentsOfFile: outside + "/config", encoding: .utf8) == "secret-config")
        #expect(!fm.fileExists(atPath: outside + "/data/ab/\(String(repeating: "ab", count: 31))ee"))
        _ = try await server.raw("DELETE", "/evil/keys/\(hexName)")
        _ = try await server.raw("DELETE", "/evil/config")
        #expect(fm.fileExists(atPath: outside + "/keys/\(hexName)") && fm.fileExists(atPath: outside + "/config"))
        _ = try await server.raw("POST", "/evil/sub/?create=true")
        #expect(!fm.fileExists(atPath: outside + "/sub"))
        // The repository itself still works.
        let (ok, _) = try await server.raw("POST", "/r/snapshots/\(hexName)", body: Data("s".utf8))
        #expect(ok == 200)
        #expect(try await server.raw("GET", "/r/snapshots/\(hexName)").1 == "s")
    }

    /// Item 23: temporary files of uploads that no live server can own are removed at start;
    /// data, live uploads and files that are not the server's own stay.
    @Test func staleUploadsAreRemovedAtStart() async throws {
        var dead: Int32 = 4_000_000
        while kill(dead, 0) == 0 || errno != ESRCH { dead -= 1 }
        let live = getppid()
        let names = (dead: ".upload-\(dead)-\(UUID().uuidString)", oldLegacy: ".upload-\(UUID().uuidString)",
                     freshLegacy: ".upload-\(UUID().uuidString)", live: ".upload-\(live)-\(UUID().uuidString)",
                     foreign: ".upload-notes")
        let server = try await RunningServer { config in
            let fm = FileManager.default
            let keys = config.path + "/r/keys", data = config.path + "/r/data/ab"
            try? fm.createDirectory(atPath: keys, withIntermediateDirectories: true)
            try? fm.createDirectory(atPath: data, withIntermediateDirectories: true)
            for (dir, name) in [(keys, names.dead), (keys, names.oldLegacy), (data, names.freshLegacy), (data, names.live),
                                (keys, names.foreign), (keys, hexName), (config.path + "/r", names.dead)] {
                _ = fm.createFile(atPath: dir + "/" + name, contents: Data("x".utf8))
            }
            try? fm.setAttributes([.modificationDate: Date().addingTimeInterval(-2 * 86_400)],
                                  ofItemAtPath: keys + "/" + names.oldLegacy)
        }
        let repo = server.dir.path + "/repos/r"
        let fm = FileManager.default
        #expect(!fm.fileExists(atPath: repo + "/keys/" + names.dead))
        #expect(!fm.fileExists(atPath: repo + "/" + names.dead))
        #expect(!fm.fileExists(atPath: repo + "/keys/" + names.oldLegacy))
        #expect(fm.fileExists(atPath: repo + "/data/ab/" + names.freshLegacy))
        #expect(fm.fileExists(atPath: repo + "/data/ab/" + names.live))
        #expect(fm.fileExists(atPath: repo + "/keys/" + names.foreign))
        #expect(fm.fileExists(atPath: repo + "/keys/" + hexName))
    }
}
