import Foundation
import KubernetesAPI
import Storage
import Testing
import TestSupport

/// Leader election with short periods (lease 20 s: a loaded machine has stalled renewals for 8 s): liveness waits are generous, no speed claims.
@Suite(.serialized, .enabled(if: standInAvailable, "needs tests/kube/apiserver.py and python3 with kmock"))
struct LeaderElectionTests {
    func elector(_ kube: KubeClient, _ identity: String) -> LeaderElection {
        LeaderElection(client: kube, name: "che-backup-controller", namespace: nil, identity: identity,
                       leaseDuration: .seconds(20), renewDeadline: .seconds(15), retryPeriod: .milliseconds(500),
                       logger: quietLogger)
    }

    /// A body that reports it runs, then waits until told to finish (or is cancelled).
    final class Body: Sendable {
        let running = Locked(false)
        let finish = Locked(false)
        let cancelled = Locked(false)

        func run() async throws -> String {
            running.withLock { $0 = true }
            do {
                while !finish.value { try await Task.sleep(for: .milliseconds(20)) }
            } catch {
                cancelled.withLock { $0 = true }
                throw error
            }
            return "done"
        }
    }

    @Test func oneLeadsTheOtherTakesOverAfterRelease() async throws {
        let server = try await KubeAPIServer()
        let kube = KubeClient(config: try server.config(), logger: quietLogger)
        let a = elector(kube, "replica-a"), b = elector(kube, "replica-b")
        let bodyA = Body(), bodyB = Body()
        let runA = Task { try await a.run { try await bodyA.run() } }
        // A liveness bound, not a speed one: on a loaded machine the first acquisition has taken over 30 s.
        #expect(try await eventually(90) { bodyA.running.value })
        #expect(try await a.currentHolder() == "replica-a")
        let runB = Task { try await b.run { try await bodyB.run() } }
        // B keeps trying while A renews: it must not lead meanwhile (several lease durations).
        for _ in 0..<25 {
            try await Task.sleep(for: .milliseconds(200))
            #expect(!bodyB.running.value)
        }
        #expect(try await b.currentHolder() == "replica-a")
        bodyA.finish.withLock { $0 = true }
        #expect(try await runA.value == "done")
        #expect(try await eventually { bodyB.running.value })  // released: no need to wait for expiry
        #expect(try await a.currentHolder() == "replica-b")
        let lease = try await kube.get(.leases, "che-backup-controller")
        #expect(lease[path: "spec", "leaseTransitions"] == 1)  // A to B (client-go counts every change of holder)
        #expect(lease[path: "spec", "leaseDurationSeconds"] == 20)
        #expect(lease[path: "spec", "renewTime"]?.string?.hasSuffix("Z") == true)
        bodyB.finish.withLock { $0 = true }
        #expect(try await runB.value == "done")
        #expect(try await a.currentHolder() == nil)
    }

    @Test func anUnrenewedLeaseIsTakenAfterItExpires() async throws {
        let server = try await KubeAPIServer()
        let kube = KubeClient(config: try server.config(), logger: quietLogger)
        _ = try await kube.create(.leases, [
            "metadata": ["name": "che-backup-controller"],
            "spec": ["holderIdentity": "crashed-replica", "leaseDurationSeconds": 2, "leaseTransitions": 4,
                     "renewTime": .string(LeaderElectionTests.now()), "acquireTime": .string(LeaderElectionTests.now())],
        ])
        let b = elector(kube, "replica-b")
        let body = Body()
        let run = Task { try await b.run { try await body.run() } }
        try await Task.sleep(for: .milliseconds(500))
        #expect(!body.running.value)  // the holder's lease has not run out yet
        #expect(try await eventually { body.running.value })
        let lease = try await kube.get(.leases, "che-backup-controller")
        #expect(lease[path: "spec", "holderIdentity"] == "replica-b")
        #expect(lease[path: "spec", "leaseTransitions"] == 5)
        body.finish.withLock { $0 = true }
        _ = try await run.value
    }

    @Test func aStolenLeaseCancelsTheBody() async throws {
        let server = try await KubeAPIServer()
        let kube = KubeClient(config: try server.config(), logger: quietLogger)
        let a = elector(kube, "replica-a")
        let body = Body()
        let run = Task { try await a.run { try await body.run() } }
        #expect(try await eventually { body.running.value })
        var lease = try await kube.get(.leases, "che-backup-controller")
        lease[path: "spec", "holderIdentity"] = "thief"
        lease[path: "spec", "leaseDurationSeconds"] = 60
        lease[path: "spec", "renewTime"] = .string(Self.now())
        _ = try await kube.replace(.leases, lease)
        let error = await #expect(throws: KubeError.self) { try await run.value }
        #expect(error?.code == .leadershipLost)
        #expect(body.cancelled.value)
        #expect(try await a.currentHolder() == "thief")  // not released: it is not ours
    }

    @Test func failingRenewalsEndLeadershipAtTheDeadline() async throws {
        let server = try await KubeAPIServer()
        let kube = KubeClient(config: try server.config(), logger: quietLogger)
        let a = elector(kube, "replica-a")
        let body = Body()
        let run = Task { try await a.run { try await body.run() } }
        #expect(try await eventually { body.running.value })
        try await server.hook("/_fault/fail?count=100000&code=503&plural=leases")
        let error = await #expect(throws: KubeError.self) { try await run.value }
        #expect(error?.code == .leadershipLost)
        #expect(body.cancelled.value)
        try await server.hook("/_fault/clear")
    }

    @Test func cancellingTheRunReleasesTheLease() async throws {
        let server = try await KubeAPIServer()
        let kube = KubeClient(config: try server.config(), logger: quietLogger)
        let a = elector(kube, "replica-a")
        let body = Body()
        let run = Task { try await a.run { try await body.run() } }
        #expect(try await eventually { body.running.value })
        run.cancel()
        await #expect(throws: CancellationError.self) { try await run.value }
        #expect(body.cancelled.value)
        #expect(try await a.currentHolder() == nil)

        // Cancelled while still waiting for the lease: ends without leading.
        _ = try await kube.patch(.leases, "che-backup-controller", ["spec": ["holderIdentity": "other", "leaseDurationSeconds": 60]])
        let waiting = Body()
        let second = Task { try await a.run { try await waiting.run() } }
        try await Task.sleep(for: .milliseconds(500))
        second.cancel()
        await #expect(throws: CancellationError.self) { try await second.value }
        #expect(!waiting.running.value)
        #expect(try await a.currentHolder() == "other")
    }

    @Test func aBodyThatFailsReleasesAndRethrows() async throws {
        let server = try await KubeAPIServer()
        let kube = KubeClient(config: try server.config(), logger: quietLogger)
        struct Broke: Error {}
        await #expect(throws: Broke.self) { try await self.elector(kube, "replica-a").run { () async throws -> Int in throw Broke() } }
        #expect(try await elector(kube, "replica-a").currentHolder() == nil)
    }

    static func now() -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date())
    }
}
