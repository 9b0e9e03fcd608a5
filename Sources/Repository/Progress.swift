import Foundation
import Synchronization

/// Counters a long operation updates and a front end reads (a terminal progress line, a
/// protocol progress event). The library never prints.
public final class ProgressCounters: Sendable {
    private let bytes = Atomic<Int64>(0)
    private let items = Atomic<Int64>(0)
    private let total = Atomic<Int64>(-1)

    public init() {}

    public func add(bytes n: Int64, items i: Int64 = 0) {
        if n != 0 { bytes.add(n, ordering: .relaxed) }
        if i != 0 { items.add(i, ordering: .relaxed) }
    }

    /// The expected total in bytes, when known.
    public func setTotal(_ n: Int64) { total.store(n, ordering: .relaxed) }

    public var bytesDone: Int64 { bytes.load(ordering: .relaxed) }
    public var itemsDone: Int64 { items.load(ordering: .relaxed) }
    public var bytesTotal: Int64? {
        let t = total.load(ordering: .relaxed)
        return t < 0 ? nil : t
    }
}
