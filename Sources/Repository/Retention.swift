/// Snapshot retention in the manner of `restic forget --keep-*`.
///
/// `Retention.apply` decides, for every snapshot of one group, whether a
/// policy keeps it and why. The rules follow restic's `ApplyPolicy`:
///
/// * Snapshots are ordered newest first (equal times: ascending `id`, so the
///   result never depends on the input order).
/// * `last`, `hourly`, `daily`, `weekly`, `monthly` and `yearly` each walk that
///   list with their own counter: a snapshot is kept when its bucket (the
///   hour, day, ISO week as `year * 100 + week`, month or year, in the given
///   time zone; for `last`, every snapshot is its own bucket) differs from the
///   bucket this kind kept last, and the counter is not used up. `-1` means
///   unlimited. When a kind still has counts left at the oldest snapshot, that
///   snapshot is kept too ("oldest daily snapshot"), as restic does since 0.16.
/// * `within` keeps every snapshot strictly newer than the newest snapshot's
///   time minus the duration (years and months with Go's `AddDate` overflow
///   rule, so 31 March minus one month is 3 March, not 29 February).
/// * `tags` keeps snapshots carrying every tag of at least one list; the empty
///   tag `""` matches untagged snapshots.
/// * A snapshot is kept if any rule keeps it; all matching reasons are listed.
///
/// restic refuses an empty policy; `isEmpty` lets the caller do the same, and
/// `apply` keeps everything for an empty policy. Call `validate()` first:
/// `apply` treats invalid counts (below -1) as 0.
import Foundation

/// One snapshot as seen by the retention rules.
public struct RetentionSnapshot: Sendable, Hashable {
    public var id: String
    public var time: Date
    public var tags: [String]

    public init(id: String, time: Date, tags: [String] = []) {
        self.id = id
        self.time = time
        self.tags = tags
    }
}

/// A calendar duration as restic's `--keep-within` takes it, e.g. `1y2m3d4h`.
public struct RetentionDuration: Sendable, Hashable, CustomStringConvertible {
    public var years: Int
    public var months: Int
    public var days: Int
    public var hours: Int

    public init(years: Int = 0, months: Int = 0, days: Int = 0, hours: Int = 0) {
        self.years = years
        self.months = months
        self.days = days
        self.hours = hours
    }

    /// True when every unit is zero; a zero duration is treated as "not set".
    public var isZero: Bool { years == 0 && months == 0 && days == 0 && hours == 0 }

    /// The canonical text, e.g. `1y2m3d4h`; zero units are left out (`0h` if all are zero).
    public var description: String {
        var text = ""
        for (value, unit) in [(years, "y"), (months, "m"), (days, "d"), (hours, "h")] where value != 0 {
            text += "\(value)\(unit)"
        }
        return text.isEmpty ? "0h" : text
    }
}

/// A retention error: a bad duration or an invalid policy value.
public struct RetentionError: Error, Sendable, Equatable, CustomStringConvertible, LocalizedError {
    /// A one-line explanation.
    public var message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
    public var errorDescription: String? { message }
}

/// Which snapshots to keep; every rule left at its default is off.
public struct RetentionPolicy: Sendable, Equatable {
    /// The count that means "keep all" (restic's `unlimited`).
    public static let unlimited = -1

    public var last: Int
    public var hourly: Int
    public var daily: Int
    public var weekly: Int
    public var monthly: Int
    public var yearly: Int
    /// Keep snapshots within this duration of the newest snapshot.
    public var within: RetentionDuration?
    /// Keep snapshots that have all tags of any one list (restic `--keep-tag a,b`).
    public var tags: [[String]]

    public init(
        last: Int = 0, hourly: Int = 0, daily: Int = 0, weekly: Int = 0,
        monthly: Int = 0, yearly: Int = 0, within: RetentionDuration? = nil, tags: [[String]] = []
    ) {
        self.last = last
        self.hourly = hourly
        self.daily = daily
        self.weekly = weekly
        self.monthly = monthly
        self.yearly = yearly
        self.within = within
        self.tags = tags
    }

    fileprivate var counts: [Int] { [last, hourly, daily, weekly, monthly, yearly] }

    /// True when no rule is set (no count above 0 or unlimited, no non-zero
    /// `within`, no tag list); restic refuses to forget with such a policy.
    public var isEmpty: Bool {
        !counts.contains { $0 > 0 || $0 == Self.unlimited } && (within?.isZero ?? true) && tags.isEmpty
    }

    /// Throws when a count is below -1 or `within` has a negative unit.
    public func validate() throws {
        for (kind, count) in zip(Bucket.allCases, counts) where count < Self.unlimited {
            throw RetentionError("keep-\(kind.option) must be -1 (unlimited) or at least 0, not \(count)")
        }
        if let within, [within.years, within.months, within.days, within.hours].contains(where: { $0 < 0 }) {
            throw RetentionError("keep-within must not have negative units: \(within)")
        }
    }
}

/// The verdict for one snapshot.
public struct RetentionDecision: Sendable, Equatable {
    public var snapshot: RetentionSnapshot
    public var keep: Bool
    /// Why it is kept, in restic's order: tags, within, last, hourly, daily,
    /// weekly, monthly, yearly; e.g. `"tag a,b"`, `"within 2d"`, `"daily snapshot"`.
    public var reasons: [String]

    public init(snapshot: RetentionSnapshot, keep: Bool, reasons: [String]) {
        self.snapshot = snapshot
        self.keep = keep
        self.reasons = reasons
    }
}

/// The counted rule kinds, in restic's evaluation order.
private enum Bucket: Int, CaseIterable {
    case last, hourly, daily, weekly, monthly, yearly

    var option: String { ["last", "hourly", "daily", "weekly", "monthly", "yearly"][rawValue] }
    var reason: String { "\(option) snapshot" }

    /// The bucket value of a snapshot: equal values share a bucket.
    func key(_ parts: DateComponents, index: Int) -> Int {
        let year = parts.year ?? 0, month = parts.month ?? 0, day = parts.day ?? 0, hour = parts.hour ?? 0
        switch self {
        case .last: return index
        case .hourly: return ((year * 100 + month) * 100 + day) * 100 + hour
        case .daily: return (year * 100 + month) * 100 + day
        case .weekly: return (parts.yearForWeekOfYear ?? 0) * 100 + (parts.weekOfYear ?? 0)
        case .monthly: return year * 100 + month
        case .yearly: return year
        }
    }
}

public enum Retention {
    /// Applies `policy` to `snapshots` and returns one decision per snapshot,
    /// newest first. Calendar buckets are taken in `timeZone`. `within` is
    /// measured from the newest snapshot; pass `now` to ignore snapshots dated
    /// after it when finding that newest one, as restic does.
    public static func apply(
        _ snapshots: [RetentionSnapshot], policy: RetentionPolicy,
        timeZone: TimeZone = TimeZone(secondsFromGMT: 0)!, now: Date? = nil
    ) -> [RetentionDecision] {
        let sorted = snapshots.sorted { $0.time != $1.time ? $0.time > $1.time : $0.id < $1.id }
        if policy.isEmpty {
            return sorted.map { RetentionDecision(snapshot: $0, keep: true, reasons: ["no policy"]) }
        }

        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        calendar.firstWeekday = 2          // ISO 8601 weeks: Monday first,
        calendar.minimumDaysInFirstWeek = 4 // week 1 holds the first Thursday.

        // The keep-within boundary; nil means every snapshot is within (restic's
        // zero "latest" when all snapshots lie in the future).
        var withinAfter: Date?
        let within = policy.within.flatMap { $0.isZero ? nil : $0 }
        if let within {
            let anchor = now.map { now in sorted.first { $0.time < now }?.time } ?? sorted.first?.time
            if let anchor { withinAfter = subtract(within, from: anchor, calendar: calendar) }
        }

        var remaining = policy.counts
        var lastKey = [Int?](repeating: nil, count: Bucket.allCases.count)
        var decisions: [RetentionDecision] = []
        decisions.reserveCapacity(sorted.count)

        for (index, snapshot) in sorted.enumerated() {
            var reasons: [String] = []
            for list in policy.tags where hasTags(snapshot, list) {
                let text = list.joined(separator: ",")
                reasons.append("tag " + (text.isEmpty ? "''" : text))
            }
            if let within, withinAfter.map({ snapshot.time > $0 }) ?? true {
                reasons.append("within \(within)")
            }

            let parts = calendar.dateComponents(
                [.year, .month, .day, .hour, .yearForWeekOfYear, .weekOfYear], from: snapshot.time)
            let isOldest = index == sorted.count - 1
            for kind in Bucket.allCases {
                let count = remaining[kind.rawValue]
                guard count > 0 || count == RetentionPolicy.unlimited else { continue }
                let key = kind.key(parts, index: index)
                let sameBucket = key == lastKey[kind.rawValue]
                guard !sameBucket || isOldest else { continue }
                reasons.append(sameBucket ? "oldest \(kind.reason)" : kind.reason)
                lastKey[kind.rawValue] = key
                if count > 0 { remaining[kind.rawValue] = count - 1 }
            }
            decisions.append(RetentionDecision(snapshot: snapshot, keep: !reasons.isEmpty, reasons: reasons))
        }
        return decisions
    }

    /// Parses restic's keep-within syntax, e.g. `1y2m3d4h`: non-negative whole
    /// numbers each followed by a unit, units y, m, d, h each at most once and
    /// in that order. Surrounding whitespace is ignored.
    public static func parseDuration(_ text: String) throws -> RetentionDuration {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        func fail(_ why: String) -> RetentionError {
            RetentionError("invalid duration \"\(trimmed)\": \(why)")
        }
        guard !trimmed.isEmpty else { throw RetentionError("invalid duration: it is empty") }

        let units: [Character] = ["y", "m", "d", "h"]
        var values = [0, 0, 0, 0]
        var nextUnit = 0 // index in `units` that the next unit may have at least
        var rest = Substring(trimmed)
        while !rest.isEmpty {
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            guard !digits.isEmpty else { throw fail("expected a number at \"\(rest)\"") }
            guard let value = Int(digits) else { throw fail("number \(digits) is too large") }
            rest = rest.dropFirst(digits.count)
            guard let unit = rest.first else { throw fail("number \(value) has no unit (use y, m, d or h)") }
            guard let position = units.firstIndex(of: unit) else {
                throw fail("unknown unit \"\(unit)\" (use y, m, d or h)")
            }
            guard position >= nextUnit else {
                throw fail("unit \"\(unit)\" is repeated or out of order (write y, m, d, h, each at most once)")
            }
            values[position] = value
            nextUnit = position + 1
            rest = rest.dropFirst()
        }
        return RetentionDuration(years: values[0], months: values[1], days: values[2], hours: values[3])
    }

    /// restic's tag-list match: every tag present, except that an empty tag
    /// matches a snapshot without tags.
    private static func hasTags(_ snapshot: RetentionSnapshot, _ list: [String]) -> Bool {
        for tag in list {
            if tag.isEmpty && snapshot.tags.isEmpty { return true }
            if !snapshot.tags.contains(tag) { return false }
        }
        return true
    }

    /// `anchor` minus `duration` like Go's `t.AddDate(-y, -m, -d).Add(-h hours)`:
    /// the wall clock is kept, a day past the month's end overflows into the
    /// next month, and hours are subtracted as elapsed time.
    private static func subtract(_ duration: RetentionDuration, from anchor: Date, calendar: Calendar) -> Date {
        let whole = anchor.timeIntervalSince1970.rounded(.down)
        let fraction = anchor.timeIntervalSince1970 - whole
        let parts = calendar.dateComponents(
            [.year, .month, .day, .hour, .minute, .second], from: Date(timeIntervalSince1970: whole))
        let monthIndex = ((parts.year ?? 0) - duration.years) * 12 + ((parts.month ?? 1) - 1) - duration.months
        let year = Int((Double(monthIndex) / 12).rounded(.down))
        let month = monthIndex - year * 12 + 1
        let firstOfMonth = DateComponents(
            year: year, month: month, day: 1, hour: parts.hour, minute: parts.minute, second: parts.second)
        guard let first = calendar.date(from: firstOfMonth),
              let shifted = calendar.date(byAdding: .day, value: (parts.day ?? 1) - 1 - duration.days, to: first)
        else { return .distantPast }
        return shifted.addingTimeInterval(fraction - Double(duration.hours) * 3600)
    }
}
