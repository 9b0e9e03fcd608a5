import Foundation
import KubernetesAPI
import Logging
import Storage
import Testing
import TestSupport

let quietLogger: Logger = {
    var logger = Logger(label: "kube-test")
    logger.logLevel = .error
    return logger
}()

let standInAvailable = KubeAPIServer.available || TestServices.required

/// Polls `condition` until it holds (liveness only: the limit is generous, never a speed claim).
func eventually(_ seconds: Double = 30, _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(50))
    }
    return try await condition()
}

/// The requests the server logged whose path starts with `prefix`.
func logged(_ server: KubeAPIServer, _ prefix: String) async throws -> [JSON] {
    try await server.requests().filter { $0["path"]?.string?.hasPrefix(prefix) == true }
}

@Suite(.serialized, .enabled(if: standInAvailable, "needs tests/kube/apiserver.py and python3 with kmock"))
struct KubeClientTests {
    @Test func createGetListReplacePatchDelete() async throws {
        let server = try await KubeAPIServer()
        let kube = KubeClient(config: try server.config(), logger: quietLogger)
        #expect(kube.namespace == "eclipse-che")
        let created = try await kube.create(.configMaps, ["metadata": ["name": "cm1", "labels": ["app": "x"]], "data": ["k": "v"]])
        #expect(created.uid != nil)
        #expect(created.namespace == "eclipse-che")
        #expect(created["kind"] == "ConfigMap")
        let got = try await kube.get(.configMaps, "cm1")
        #expect(got["data"] == ["k": "v"])
        #expect(got.resourceVersion == created.resourceVersion)

        let duplicate = await #expect(throws: KubeError.self) { try await kube.create(.configMaps, ["metadata": ["name": "cm1"]]) }
        #expect(duplicate?.code == .alreadyExists)
        #expect(duplicate?.status == 409)

        _ = try await kube.create(.configMaps, ["metadata": ["name": "cm2"]])
        let labelled = try await kube.list(.configMaps, labelSelector: "app=x")
        #expect(labelled.items.compactMap(\.name) == ["cm1"])
        #expect(!labelled.resourceVersion.isEmpty)
        #expect(try await kube.list(.configMaps, fieldSelector: "metadata.name=cm2").items.compactMap(\.name) == ["cm2"])

        var changed = got
        changed["data"] = ["k": "v2"]
        let replaced = try await kube.replace(.configMaps, changed)
        #expect(replaced["data"] == ["k": "v2"])
        #expect(replaced.resourceVersion != got.resourceVersion)
        var stale = got  // still carries the old resourceVersion
        stale["data"] = ["k": "v3"]
        let conflict = await #expect(throws: KubeError.self) { try await kube.replace(.configMaps, stale) }
        #expect(conflict?.code == .conflict)
        #expect(conflict?.status == 409)
        #expect(conflict?.reason == "Conflict")
        #expect(try await kube.get(.configMaps, "cm1")["data"] == ["k": "v2"])

        #expect(try await kube.patch(.configMaps, "cm1", ["data": ["extra": "1"]])["data"] == ["k": "v2", "extra": "1"])
        let removed = try await kube.patch(.configMaps, "cm1", [["op": "remove", "path": "/data/extra"]], type: .json)
        #expect(removed["data"] == ["k": "v2"])
        let strategic = try await kube.patch(.configMaps, "cm1", ["metadata": ["labels": ["s": "1"]]], type: .strategic)
        #expect(strategic[path: "metadata", "labels"] == ["app": "x", "s": "1"])
        let patches = try await server.requests().filter { $0["method"] == "PATCH" }.compactMap { $0["contentType"]?.string }
        #expect(patches == ["application/merge-patch+json", "application/json-patch+json", "application/strategic-merge-patch+json"])

        #expect(try await kube.delete(.configMaps, "cm1"))
        #expect(try await kube.delete(.configMaps, "cm1") == false)
        #expect(try await kube.getIfPresent(.configMaps, "cm1") == nil)
        let missing = await #expect(throws: KubeError.self) { try await kube.get(.configMaps, "cm1") }
        #expect(missing?.code == .notFound)
        #expect(missing?.message.contains("cm1") == true)
        let deletes = try await server.requests().filter { $0["method"] == "DELETE" }.compactMap { $0["path"]?.string }
        #expect(deletes.allSatisfy { $0.hasSuffix("?propagationPolicy=Background") })
    }

    @Test func listsFollowPages() async throws {
        let server = try await KubeAPIServer()
        let kube = KubeClient(config: try server.config(), logger: quietLogger, listPageSize: 2)
        for i in 0..<5 { _ = try await kube.create(.configMaps, ["metadata": ["name": .string("cm\(i)")]]) }
        let list = try await kube.list(.configMaps)
        #expect(list.items.compactMap(\.name) == ["cm0", "cm1", "cm2", "cm3", "cm4"])
        #expect(!list.resourceVersion.isEmpty)
        let pages = try await logged(server, "/api/v1/namespaces/eclipse-che/configmaps?").compactMap { $0["path"]?.string }
        #expect(pages.count == 3)
        #expect(pages.filter { $0.contains("continue=") }.count == 2)
    }

    @Test func namespacesAndBadRequests() async throws {
        let server = try await KubeAPIServer()
        let kube = KubeClient(config: try server.config(), logger: quietLogger)
        let ns = try await kube.create(.namespaces, ["metadata": ["name": "second"]])
        #expect(ns.namespace == nil)
        let there = try await kube.create(.secrets, ["metadata": ["name": "s"], "stringData": ["a": "b"]], namespace: "second")
        #expect(there.namespace == "second")
        #expect(try await kube.getIfPresent(.secrets, "s") == nil)  // not in the client's namespace
        #expect(try await kube.list(.secrets, namespace: KubeClient.allNamespaces).items.contains { $0.name == "s" })

        let noNamespace = await #expect(throws: KubeError.self) {
            try await kube.create(.configMaps, ["metadata": ["name": "x"]], namespace: "no-such-ns")
        }
        #expect(noNamespace?.code == .notFound)
        let badName = await #expect(throws: KubeError.self) { try await kube.create(.configMaps, ["metadata": ["name": "Bad_Name"]]) }
        #expect(badName?.code == .invalid)
        #expect(badName?.status == 422)
        let noName = await #expect(throws: KubeError.self) { try await kube.replace(.configMaps, ["data": [:]]) }
        #expect(noName?.code == .invalid)
        let unknownKind = KubeResource(group: "example.com", version: "v1", plural: "widgets", kind: "Widget")
        let unknown = await #expect(throws: KubeError.self) { try await kube.list(unknownKind) }
        #expect(unknown?.code == .notFound)
    }

    @Test func updateStatusRetriesConflictsAndWritesOnlyThroughStatus() async throws {
        let server = try await KubeAPIServer()
        let kube = KubeClient(config: try server.config(), logger: quietLogger)
        let spec: JSON = ["backupServerConfigRef": "internal"]
        _ = try await kube.create(.clusterBackups, ["metadata": ["name": "nightly"], "spec": spec])
        try await server.hook("/_fault/conflict?plural=checlusterbackups&count=3")
        let calls = Locked(0)
        let stored = try await kube.updateStatus(.clusterBackups, "nightly") { object in
            calls.withLock { $0 += 1 }
            object["status"] = ["state": "Running"]
            object["spec"] = ["tampered": true]  // not status: must not be written
        }
        #expect(calls.value == 4)
        #expect(stored[path: "status", "state"] == "Running")
        #expect(stored["spec"] == spec)
        #expect(try await kube.get(.clusterBackups, "nightly")["spec"] == spec)
        let writes = try await server.requests().filter { $0["method"]?.string != "GET" && $0["path"]?.string?.contains("/nightly") == true }
        #expect(writes.count == 4)
        #expect(writes.allSatisfy { $0["method"] == "PUT" && $0["path"]?.string?.hasSuffix("/checlusterbackups/nightly/status") == true })
        #expect(writes.allSatisfy { $0["resourceVersion"]?.string?.isEmpty == false })
        #expect(writes.compactMap { $0["code"]?.int } == [409, 409, 409, 200])

        // Nothing to change: nothing written.
        let unchanged = try await kube.updateStatus(.clusterBackups, "nightly") { $0["status"] = ["state": "Running"] }
        #expect(unchanged.resourceVersion == stored.resourceVersion)
        #expect(try await logged(server, "/apis").filter { $0["method"] == "PUT" }.count == 4)

        try await server.hook("/_fault/conflict?plural=checlusterbackups&count=50")
        let exhausted = await #expect(throws: KubeError.self) {
            try await kube.updateStatus(.clusterBackups, "nightly", attempts: 3) { $0["status"] = ["state": "Failed"] }
        }
        #expect(exhausted?.code == .conflict)
        try await server.hook("/_fault/clear")

        struct Refused: Error {}
        await #expect(throws: Refused.self) { try await kube.updateStatus(.clusterBackups, "nightly") { _ in throw Refused() } }
        let absent = await #expect(throws: KubeError.self) { try await kube.updateStatus(.clusterBackups, "absent") { _ in } }
        #expect(absent?.code == .notFound)
    }

    @Test func scaleGoesThroughTheScaleSubresource() async throws {
        let server = try await KubeAPIServer()
        let kube = KubeClient(config: try server.config(), logger: quietLogger)
        _ = try await kube.create(.deployments, ["metadata": ["name": "che"], "spec": ["replicas": 1, "selector": ["matchLabels": ["a": "b"]]]])
        try await kube.scale(.deployments, "che", replicas: 0)
        #expect(try await kube.get(.deployments, "che")[path: "spec", "replicas"] == 0)
        let scaleWrites = try await server.requests().filter { $0["method"] == "PATCH" }.compactMap { $0["path"]?.string }
        #expect(scaleWrites == ["/apis/apps/v1/namespaces/eclipse-che/deployments/che/scale"])
        let negative = await #expect(throws: KubeError.self) { try await kube.scale(.deployments, "che", replicas: -1) }
        #expect(negative?.code == .invalid)
        let absent = await #expect(throws: KubeError.self) { try await kube.scale(.deployments, "absent", replicas: 1) }
        #expect(absent?.code == .notFound)
    }

    @Test func readsAreRetriedThroughTransientFailuresWritesAreNot() async throws {
        let server = try await KubeAPIServer()
        let kube = KubeClient(config: try server.config(), logger: quietLogger)
        _ = try await kube.create(.configMaps, ["metadata": ["name": "cm"]])
        try await server.hook("/_fault/fail?count=2&code=503")
        #expect(try await kube.get(.configMaps, "cm").name == "cm")
        try await server.hook("/_fault/fail?count=5&code=500")
        let failed = await #expect(throws: KubeError.self) { try await kube.get(.configMaps, "cm") }
        #expect(failed?.code == .transient)
        #expect(failed?.status == 500)
        try await server.hook("/_fault/clear")
        try await server.hook("/_fault/fail?count=1&code=503")
        let write = await #expect(throws: KubeError.self) { try await kube.create(.configMaps, ["metadata": ["name": "other"]]) }
        #expect(write?.code == .transient)
        #expect(try await kube.getIfPresent(.configMaps, "other") == nil)
    }

    @Test func aWrongTokenIsUnauthorizedAndNeverShown() async throws {
        let server = try await KubeAPIServer()
        let kube = KubeClient(config: try server.config(token: "wrong-token-value"), logger: quietLogger)
        let error = await #expect(throws: KubeError.self) { try await kube.get(.configMaps, "x") }
        #expect(error?.code == .unauthorized)
        #expect(error?.status == 401)
        #expect(error?.message.contains("the API server refused the credentials (401 Unauthorized)") == true)
        #expect(error?.message.contains("wrong-token-value") == false)
        #expect(error?.message.contains("fixture-token") == false)
    }

    @Test func aRotatedTokenFileIsUsedOnTheNextRequest() async throws {
        let server = try await KubeAPIServer()
        let dir = TempDir()
        defer { dir.remove() }
        try "stale-token".write(toFile: dir.file("token"), atomically: true, encoding: .utf8)
        var config = try server.config()
        config.token = .file(dir.file("token"))
        let kube = KubeClient(config: config, logger: quietLogger)
        let refused = await #expect(throws: KubeError.self) { try await kube.list(.configMaps) }
        #expect(refused?.code == .unauthorized)
        try "fixture-token\n".write(toFile: dir.file("token"), atomically: true, encoding: .utf8)
        #expect(try await kube.list(.configMaps).items.isEmpty)
    }

    @Test func anUntrustedServerCertificateIsATLSError() async throws {
        let server = try await KubeAPIServer()
        let other = try await KubeAPIServer(token: nil)  // its own CA
        var config = try server.config()
        config.caPEM = other.caPEM
        #expect(config.caPEM != nil && config.caPEM != server.caPEM)
        let kube = KubeClient(config: config, logger: quietLogger)
        let error = await #expect(throws: KubeError.self) { try await kube.get(.configMaps, "x") }
        #expect(error?.code == .tls)
        #expect(error?.message.contains(server.url) == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("fixture-token") == false)

        config.caPEM = nil  // the system's CAs do not know it either
        let system = await #expect(throws: KubeError.self) { try await KubeClient(config: config, logger: quietLogger).list(.pods) }
        #expect(system?.code == .tls)

        config.caPEM = other.caPEM
        config.insecureSkipTLSVerify = true  // only when the kubeconfig says so
        #expect(try await KubeClient(config: config, logger: quietLogger).list(.pods).items.isEmpty)
    }

    @Test func anUnreachableServerIsTransient() async throws {
        let closed = ClosedPort()
        defer { withExtendedLifetime(closed) {} }
        let port = closed.port
        let kube = KubeClient(config: KubeConfig(server: "https://127.0.0.1:\(port)", token: .fixed("t0ken-never-shown")),
                              logger: quietLogger)
        let error = await #expect(throws: KubeError.self) { try await kube.get(.configMaps, "x") }
        #expect(error?.code == .transient)
        #expect(error?.status == 0)
        #expect(error?.message.contains("cannot reach the API server at https://127.0.0.1:\(port)") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("t0ken-never-shown") == false)
    }
}
