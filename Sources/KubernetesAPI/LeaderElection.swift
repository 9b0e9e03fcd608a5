import Foundation
import Logging
import Storage

/// Leader election on a `coordination.k8s.io/v1` Lease, by client-go's rules. The lease names
/// its holder (`holderIdentity`), how long a holding lasts unrenewed (`leaseDurationSeconds`),
/// when it was acquired and last renewed, and how often it changed hands (`leaseTransitions`).
/// A candidate takes the lease when it is absent, already its own, released (no holder), or not
/// renewed for `leaseDuration` as this candidate observed it (its own clock, never the holder's
/// timestamps). The leader renews every `retryPeriod`; leadership is lost when no renewal
/// succeeded for `renewDeadline` or the lease is seen held by another. On leaving, the lease is
/// released (holder cleared) so another replica takes over at once.
public struct LeaderElection: Sendable {
    public let client: KubeClient
    public let name: String
    public let namespace: String?
    public let identity: String
    public let leaseDuration: Duration
    public let renewDeadline: Duration
    public let retryPeriod: Duration
    let logger: Logger

    public init(client: KubeClient, name: String, namespace: String?, identity: String, leaseDuration: Duration = .seconds(15),
                renewDeadline: Duration = .seconds(10), retryPeriod: Duration = .seconds(2), logger: Logger) {
        self.client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.leaseDuration = leaseDuration
        self.renewDeadline = renewDeadline
        self.retryPeriod = retryPeriod
        var logger = logger
        logger[metadataKey: "lease"] = "\(name)"
        self.logger = logger
    }

    /// Waits until leader, then runs `body` while leading. When leadership is lost `body` is
    /// cancelled and, once it has ended, this throws `KubeError` `.leadershipLost`. The lease is
    /// released when `body` ends (returning or throwing) or the calling task is cancelled.
    public func run<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let state = Locked(Observation())
        try await acquire(state)
        logger.info("became leader", metadata: ["identity": "\(identity)"])
        let outcome: Result<T, any Error> = await withTaskGroup(of: Step<T>.self) { group in
            group.addTask {
                do { return .finished(.success(try await body())) } catch { return .finished(.failure(error)) }
            }
            group.addTask { await renewWhileLeading(state) ? .lost : .stopped }
            var result: Result<T, any Error>?
            var lost = false
            while let step = await group.next() {
                switch step {
                case .finished(let r):
                    result = r
                    group.cancelAll()  // stops renewing
                case .lost:
                    lost = result == nil  // after body has finished, a late loss changes nothing
                    group.cancelAll()  // cancels body; its result still arrives
                case .stopped:
                    break
                }
            }
            if lost {
                return .failure(KubeError(.leadershipLost, "lost the leadership of lease \(leaseDescription) (identity \(identity))"))
            }
            return result ?? .failure(CancellationError())
        }
        // Released even when this task is cancelled: the release runs in a task of its own.
        await Task { await release(state) }.value
        return try outcome.get()
    }

    /// Who holds the lease now; nil when it is absent or released.
    public func currentHolder() async throws -> String? {
        guard let lease = try await client.getIfPresent(.leases, name, namespace: namespace) else { return nil }
        let holder = lease[path: "spec", "holderIdentity"]?.string ?? ""
        return holder.isEmpty ? nil : holder
    }

    // MARK: - The rules

    enum Step<T: Sendable>: Sendable {
        case finished(Result<T, any Error>)
        case lost
        case stopped
    }

    /// The lease record as this candidate last saw it, and when (by its own clock) it last changed.
    struct Observation: Sendable {
        var record: JSON?
        var changedAt = ContinuousClock.now
    }

    enum Attempt {
        case leading
        case heldByOther(String)
    }

    var leaseDescription: String { (namespace ?? client.namespace) + "/" + name }

    private func acquire(_ state: Locked<Observation>) async throws {
        var lastHolder: String?
        while true {
            try Task.checkCancellation()
            do {
                switch try await tryAcquireOrRenew(state) {
                case .leading: return
                case .heldByOther(let holder):
                    if holder != lastHolder { logger.info("waiting for the lease", metadata: ["holder": "\(holder)"]) }
                    lastHolder = holder
                }
            } catch let error as KubeError where error.code == .conflict || error.code == .alreadyExists {
                // Another candidate wrote first: look again after the retry period.
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                logger.warning("could not acquire the lease", metadata: ["error": "\(error)"])
            }
            try await Task.sleep(for: jittered(retryPeriod))
        }
    }

    /// Renews every retry period; returns true when leadership is lost, false when cancelled.
    private func renewWhileLeading(_ state: Locked<Observation>) async -> Bool {
        var lastRenewal = ContinuousClock.now
        while true {
            do { try await Task.sleep(for: retryPeriod) } catch { return false }
            do {
                // An attempt that hangs must not outlast the deadline (client-go bounds it the same way).
                let remaining = renewDeadline - (ContinuousClock.now - lastRenewal)
                switch try await withTimeout(remaining, { try await tryAcquireOrRenew(state) }) {
                case .leading:
                    lastRenewal = ContinuousClock.now
                    continue
                case .heldByOther(let holder):
                    logger.warning("the lease is held by another", metadata: ["holder": "\(holder)"])
                    return true
                }
            } catch is CancellationError {
                return false
            } catch {
                if Task.isCancelled { return false }
                logger.warning("could not renew the lease", metadata: ["error": "\(error)"])
            }
            if ContinuousClock.now - lastRenewal >= renewDeadline {
                logger.warning("no renewal succeeded within the renew deadline")
                return true
            }
        }
    }

    struct TimedOut: Error {}

    /// `operation`'s result, or `TimedOut` when it takes longer than `limit` (it is cancelled then).
    private func withTimeout<R: Sendable>(_ limit: Duration, _ operation: @escaping @Sendable () async throws -> R) async throws -> R {
        try await withThrowingTaskGroup(of: R?.self) { group in
            group.addTask { try await operation() }
            group.addTask {
                try await Task.sleep(for: max(limit, .zero))
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let result = first else { throw TimedOut() }
            return result
        }
    }

    private func tryAcquireOrRenew(_ state: Locked<Observation>) async throws -> Attempt {
        let now = Date()
        guard let lease = try await client.getIfPresent(.leases, name, namespace: namespace) else {
            let created = try await client.create(.leases, newLease(now), namespace: namespace)
            state.withLock { $0 = Observation(record: created["spec"], changedAt: .now) }
            return .leading
        }
        let spec = lease["spec"] ?? .object([:])
        let observed = state.withLock { s -> Observation in
            if s.record != spec { s.record = spec; s.changedAt = .now }
            return s
        }
        let holder = spec["holderIdentity"]?.string ?? ""
        let duration = Duration.seconds(spec["leaseDurationSeconds"]?.int ?? 0)
        if !holder.isEmpty && holder != identity && ContinuousClock.now - observed.changedAt < duration {
            return .heldByOther(holder)
        }
        var updated = lease
        if holder != identity {
            updated[path: "spec", "acquireTime"] = .string(Self.microTime(now))
            updated[path: "spec", "leaseTransitions"] = .int((spec["leaseTransitions"]?.int ?? 0) + 1)
        }
        updated[path: "spec", "holderIdentity"] = .string(identity)
        updated[path: "spec", "leaseDurationSeconds"] = .int(Self.seconds(leaseDuration))
        updated[path: "spec", "renewTime"] = .string(Self.microTime(now))
        let stored = try await client.replace(.leases, updated, namespace: namespace)
        state.withLock { $0 = Observation(record: stored["spec"], changedAt: .now) }
        return .leading
    }

    /// Clears the holder, if the lease is still ours, so another candidate need not wait for expiry.
    private func release(_ state: Locked<Observation>) async {
        do {
            guard let lease = try await client.getIfPresent(.leases, name, namespace: namespace),
                  lease[path: "spec", "holderIdentity"]?.string == identity else { return }
            var released = lease
            let now = Self.microTime(Date())
            released[path: "spec", "holderIdentity"] = ""
            released[path: "spec", "leaseDurationSeconds"] = 1
            released[path: "spec", "acquireTime"] = .string(now)
            released[path: "spec", "renewTime"] = .string(now)
            _ = try await client.replace(.leases, released, namespace: namespace)
            logger.info("released the lease", metadata: ["identity": "\(identity)"])
        } catch {
            logger.warning("could not release the lease (another replica takes over when it expires)",
                           metadata: ["error": "\(error)"])
        }
    }

    private func newLease(_ now: Date) -> JSON {
        var metadata: JSON = ["name": .string(name)]
        if let namespace { metadata["namespace"] = .string(namespace) }
        return [
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata,
            "spec": [
                "holderIdentity": .string(identity), "leaseDurationSeconds": .int(Self.seconds(leaseDuration)),
                "acquireTime": .string(Self.microTime(now)), "renewTime": .string(Self.microTime(now)), "leaseTransitions": 0,
            ],
        ]
    }

    /// A period with up to 20% added, so candidates do not move in lockstep (client-go's jitter).
    private func jittered(_ period: Duration) -> Duration { period * Double.random(in: 1.0...1.2) }

    /// Whole seconds, at least 1 (the Lease field is an integer).
    static func seconds(_ duration: Duration) -> Int64 {
        max(1, Int64((Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18).rounded(.up)))
    }

    /// Kubernetes' MicroTime: RFC 3339 with microseconds, UTC (2024-01-02T03:04:05.678901Z).
    static func microTime(_ date: Date) -> String {
        let t = date.timeIntervalSince1970
        let whole = t.rounded(.down)
        var seconds = time_t(whole)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
                      Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), Int((t - whole) * 1_000_000))
    }
}
