import Foundation

/// A change to an object seen by a watch.
public struct WatchEvent: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable {
        case added = "ADDED"
        case modified = "MODIFIED"
        case deleted = "DELETED"
    }

    public var kind: Kind
    public var object: JSON

    public init(_ kind: Kind, _ object: JSON) {
        self.kind = kind
        self.object = object
    }
}

/// What a watch has emitted so far, one entry per object (by namespace and name), and the
/// resourceVersion to go on from. Lists and watch events go through it so that each version of
/// an object is emitted once, whatever the server repeats after a reconnect or a relist, and a
/// relist emits deletions for objects that vanished while no watch was open.
struct WatchCache: Sendable {
    /// The last emitted state of each object.
    private(set) var objects: [String: JSON] = [:]
    /// Where the next watch starts; nil: list first.
    var resourceVersion: String?

    enum Outcome: Equatable {
        case emit([WatchEvent])
        /// The server no longer has the history from our resourceVersion: list again.
        case gone
        case failed(String)
    }

    static func key(_ object: JSON) -> String { (object.namespace ?? "") + "/" + (object.name ?? "") }

    /// A list's result: emits what differs from what was emitted before (deletions first).
    mutating func listed(_ items: [JSON], resourceVersion: String) -> [WatchEvent] {
        var seen = Set<String>()
        var changes: [WatchEvent] = []
        for item in items {
            let key = Self.key(item)
            seen.insert(key)
            changes += upsert(item, key: key)
        }
        var deletions: [WatchEvent] = []
        for (key, old) in objects where !seen.contains(key) {
            objects[key] = nil
            deletions.append(WatchEvent(.deleted, old))
        }
        deletions.sort { Self.key($0.object) < Self.key($1.object) }
        self.resourceVersion = resourceVersion
        return deletions + changes
    }

    /// One watch event (`type` ADDED, MODIFIED, DELETED, BOOKMARK or ERROR).
    mutating func apply(type: String, object: JSON) -> Outcome {
        switch type {
        case "ADDED", "MODIFIED":
            let events = upsert(object, key: Self.key(object))
            if let rv = object.resourceVersion { resourceVersion = rv }
            return .emit(events)
        case "DELETED":
            if let rv = object.resourceVersion { resourceVersion = rv }
            guard objects.removeValue(forKey: Self.key(object)) != nil else { return .emit([]) }  // never emitted: nothing to retract
            return .emit([WatchEvent(.deleted, object)])
        case "BOOKMARK":
            if let rv = object.resourceVersion { resourceVersion = rv }
            return .emit([])
        case "ERROR":
            let code = object["code"]?.int ?? 0
            let reason = object["reason"]?.string ?? ""
            if code == 410 || reason == "Expired" || reason == "Gone" { return .gone }
            return .failed(object["message"]?.string ?? "an ERROR event (code \(code), \(reason.isEmpty ? "no reason" : reason))")
        default:
            return .failed("an event of unknown type \"\(type)\"")
        }
    }

    /// Records an object's current state; returns what to emit for it.
    private mutating func upsert(_ object: JSON, key: String) -> [WatchEvent] {
        guard let old = objects[key] else {
            objects[key] = object
            return [WatchEvent(.added, object)]
        }
        if let oldUID = old.uid, let newUID = object.uid, oldUID != newUID {  // deleted and created again
            objects[key] = object
            return [WatchEvent(.deleted, old), WatchEvent(.added, object)]
        }
        if let rv = object.resourceVersion, let oldRV = old.resourceVersion {
            if rv == oldRV { return [] }
            // resourceVersions are opaque, but when both are numbers (etcd revisions) an older one is a replay.
            if let new = UInt64(rv), let previous = UInt64(oldRV), new < previous { return [] }
        }
        objects[key] = object
        return [WatchEvent(.modified, object)]
    }
}

/// Splits a byte stream into lines (a watch sends one JSON event per line), pieces arriving in
/// any sizes. A line longer than `limit` is an error rather than unbounded memory.
struct LineSplitter: Sendable {
    let limit: Int
    private var pending: [UInt8] = []

    init(limit: Int) { self.limit = limit }

    /// The lines completed by `bytes`, without their newline; empty lines are skipped.
    mutating func feed(_ bytes: UnsafeRawBufferPointer) throws -> [Data] {
        var lines: [Data] = []
        var start = 0
        for (i, byte) in bytes.enumerated() where byte == 0x0A {
            if pending.isEmpty {
                if i > start { lines.append(Data(bytes[start..<i])) }
            } else {
                pending += bytes[start..<i]
                lines.append(Data(pending))
                pending.removeAll(keepingCapacity: true)
            }
            start = i + 1
        }
        pending += bytes[start...]
        if pending.count > limit {
            pending.removeAll()
            throw KubeError(.invalid, "a watch event longer than \(limit) bytes")
        }
        return lines.filter { !$0.allSatisfy { $0 == 0x0D || $0 == 0x20 } }
    }

    /// Bytes of an unfinished line.
    var buffered: Int { pending.count }
}

/// Exponential backoff with jitter: each delay is between half and all of base·2ⁿ, at most `max`.
struct Backoff: Sendable {
    let base: Double
    let max: Double
    private(set) var failures = 0

    init(base: Double = 0.2, max: Double = 10) {
        self.base = base
        self.max = max
    }

    mutating func next() -> Duration {
        let ceiling = Swift.min(max, base * pow(2, Double(Swift.min(failures, 30))))
        failures += 1
        return .milliseconds(Int(ceiling * Double.random(in: 0.5...1.0) * 1000))
    }

    mutating func reset() { failures = 0 }
}
