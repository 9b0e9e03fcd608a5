/// Five-field cron schedules as Kubernetes CronJob (robfig/cron) and Vixie
/// cron read them: `minute hour day-of-month month day-of-week`.
///
/// Each field is `*`, a number, a range `a-b`, a step `*/n`, `a-b/n` or `a/n`
/// (from `a` to the field's end), or a comma list of those. Months take
/// `JAN`-`DEC`, days of week `SUN`-`SAT` (any case) and 0-7 (0 and 7 are
/// Sunday); the day fields also take `?` for `*`. The descriptors `@yearly`,
/// `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight` and `@hourly`
/// stand for their usual five fields. A leading `CRON_TZ=Zone` or `TZ=Zone`
/// fixes the time zone, overriding the one passed to `next`/`previous`.
///
/// When both day fields are restricted, a day matches if either matches;
/// when one is unrestricted (`*`, `?` or `*/1`, as in robfig/cron) both must.
///
/// Times are wall-clock times in the zone: one that does not exist (spring
/// forward) is skipped, one that occurs twice (fall back) runs only at its
/// first occurrence. Searches look at most eight years ahead or back, which
/// covers 29 February across a century that is not a leap year.
import Foundation

/// A cron parse error.
public struct CronError: Error, Sendable, Equatable, CustomStringConvertible, LocalizedError {
    /// A one-line explanation naming the bad field.
    public var message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
    public var errorDescription: String? { message }
}

/// A parsed cron schedule.
public struct CronSchedule: Sendable, Equatable, CustomStringConvertible {
    /// The text it was parsed from, unchanged.
    public let description: String
    /// The zone named by a `CRON_TZ=` or `TZ=` prefix, if any.
    public let timeZone: TimeZone?

    // Bit n set means value n is allowed; day of week uses bits 0 (Sunday)-6.
    private let minutes: UInt64
    private let hours: UInt64
    private let daysOfMonth: UInt64
    private let months: UInt64
    private let daysOfWeek: UInt64
    private let dayOfMonthRestricted: Bool
    private let dayOfWeekRestricted: Bool

    private static let horizonDays = 366 * 8 + 2

    private static let descriptors: [String: String] = [
        "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
        "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
    ]

    public init(parsing text: String) throws {
        // Quote the text on one line in messages, whatever whitespace it holds.
        let shown = "\"" + text.split(whereSeparator: \.isWhitespace).joined(separator: " ") + "\""
        var words = text.split(whereSeparator: \.isWhitespace).map(String.init)
        guard !words.isEmpty else { throw CronError("empty cron schedule") }

        var zone: TimeZone?
        for prefix in ["CRON_TZ=", "TZ="] where words[0].hasPrefix(prefix) {
            let name = String(words[0].dropFirst(prefix.count))
            guard let found = TimeZone(identifier: name), !name.isEmpty else {
                throw CronError("\(shown): unknown time zone \"\(name)\"")
            }
            zone = found
            words.removeFirst()
            guard !words.isEmpty else { throw CronError("\(shown): no schedule after \(prefix)\(name)") }
            break
        }

        if words[0].hasPrefix("@") {
            guard let expansion = Self.descriptors[words[0].lowercased()] else {
                throw CronError("\(shown): unknown descriptor \(words[0]) (use @yearly, @annually, "
                    + "@monthly, @weekly, @daily, @midnight or @hourly)")
            }
            guard words.count == 1 else { throw CronError("\(shown): \(words[0]) takes no further fields") }
            words = expansion.split(separator: " ").map(String.init)
        }
        guard words.count == 5 else {
            throw CronError("\(shown): expected 5 fields (minute hour day-of-month month day-of-week), "
                + "found \(words.count)")
        }

        let fields = try zip(Field.all, words).map { field, word in
            do {
                return try field.parse(word)
            } catch let error as CronError {
                throw CronError("field \(field.number) (\(field.name)) of \(shown): \(error.message)")
            }
        }
        description = text
        timeZone = zone
        minutes = fields[0].bits
        hours = fields[1].bits
        daysOfMonth = fields[2].bits
        months = fields[3].bits
        // Fold 7 into 0: both are Sunday.
        daysOfWeek = (fields[4].bits & 0x7F) | (fields[4].bits >> 7 & 1)
        dayOfMonthRestricted = !fields[2].star
        dayOfWeekRestricted = !fields[4].star
    }

    /// Whether the schedule is due in the minute containing `date`.
    public func matches(_ date: Date, in timeZone: TimeZone) -> Bool {
        guard let wall = Self.wallSeconds(date, in: self.timeZone ?? timeZone) else { return false }
        let minute = Self.floorDiv(wall, 60)
        let day = Self.floorDiv(minute, 1440), minuteOfDay = minute - day * 1440
        return dayMatches(day) && Self.has(hours, minuteOfDay / 60) && Self.has(minutes, minuteOfDay % 60)
    }

    /// The first due time strictly after `date` (whole minutes), or nil if
    /// there is none within eight years.
    public func next(after date: Date, in timeZone: TimeZone) -> Date? {
        let zone = self.timeZone ?? timeZone
        guard let wall = Self.wallSeconds(date, in: zone) else { return nil }
        let instant = date.timeIntervalSince1970
        let start = Self.floorDiv(wall, 60) + 1
        var day = Self.floorDiv(start, 1440)
        var from = start - day * 1440
        let hourList = Self.values(hours, 0...23), minuteList = Self.values(minutes, 0...59)
        for _ in 0...Self.horizonDays {
            if dayMatches(day) {
                for hour in hourList where hour * 60 + 59 >= from {
                    for minute in minuteList where hour * 60 + minute >= from {
                        let wallTime = ((day * 24 + hour) * 60 + minute) * 60
                        if let due = Self.firstInstant(wall: wallTime, in: zone), Double(due) > instant {
                            return Date(timeIntervalSince1970: Double(due))
                        }
                    }
                }
            }
            day += 1
            from = 0
        }
        return nil
    }

    /// The latest due time at or before `date` (whole minutes), or nil if
    /// there is none within eight years; useful to detect a missed run.
    public func previous(atOrBefore date: Date, in timeZone: TimeZone) -> Date? {
        let zone = self.timeZone ?? timeZone
        guard let wall = Self.wallSeconds(date, in: zone) else { return nil }
        let instant = date.timeIntervalSince1970
        // Start a day late: after a fall-back, wall times later than `date`'s
        // own may have occurred before it.
        let end = Self.floorDiv(wall, 60) + 1440
        var day = Self.floorDiv(end, 1440)
        var upTo = end - day * 1440
        let hourList = Self.values(hours, 0...23).reversed(), minuteList = Self.values(minutes, 0...59).reversed()
        for _ in 0...(Self.horizonDays + 1) {
            if dayMatches(day) {
                for hour in hourList where hour * 60 <= upTo {
                    for minute in minuteList where hour * 60 + minute <= upTo {
                        let wallTime = ((day * 24 + hour) * 60 + minute) * 60
                        if let due = Self.firstInstant(wall: wallTime, in: zone), Double(due) <= instant {
                            return Date(timeIntervalSince1970: Double(due))
                        }
                    }
                }
            }
            day -= 1
            upTo = 1439
        }
        return nil
    }

    // MARK: - Matching

    /// Whether the civil day `day` (days since 1970-01-01) is a run day.
    private func dayMatches(_ day: Int) -> Bool {
        let (_, month, dayOfMonth) = Self.civil(day)
        guard Self.has(months, month) else { return false }
        let domOK = Self.has(daysOfMonth, dayOfMonth)
        let dowOK = Self.has(daysOfWeek, Self.floorMod(day + 4, 7)) // 1970-01-01 was a Thursday
        return dayOfMonthRestricted && dayOfWeekRestricted ? (domOK || dowOK) : (domOK && dowOK)
    }

    private static func has(_ bits: UInt64, _ value: Int) -> Bool { bits >> UInt64(value) & 1 == 1 }

    private static func values(_ bits: UInt64, _ range: ClosedRange<Int>) -> [Int] {
        range.filter { has(bits, $0) }
    }

    // MARK: - Wall-clock arithmetic

    /// `date` as seconds since 1970-01-01 00:00 of the zone's wall clock.
    private static func wallSeconds(_ date: Date, in zone: TimeZone) -> Int? {
        let seconds = date.timeIntervalSince1970.rounded(.down)
        guard seconds.isFinite, abs(seconds) < 1e13 else { return nil }
        return Int(seconds) + zone.secondsFromGMT(for: Date(timeIntervalSince1970: seconds))
    }

    /// The earliest instant (Unix seconds) showing wall time `wall` in `zone`,
    /// or nil if that wall time is skipped there.
    private static func firstInstant(wall: Int, in zone: TimeZone) -> Int? {
        var best: Int?
        for probe in [wall - 86_400, wall, wall + 86_400] {
            let offset = zone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(probe)))
            let candidate = wall - offset
            if zone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(candidate))) == offset {
                best = min(best ?? candidate, candidate)
            }
        }
        return best
    }

    /// Proleptic Gregorian (year, month, day) of `days` since 1970-01-01
    /// (Howard Hinnant's civil-from-days).
    private static func civil(_ days: Int) -> (Int, Int, Int) {
        let z = days + 719_468
        let era = floorDiv(z, 146_097)
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shiftedMonth = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * shiftedMonth + 2) / 5 + 1
        let month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    private static func floorDiv(_ a: Int, _ b: Int) -> Int { a >= 0 ? a / b : -((-a + b - 1) / b) }
    private static func floorMod(_ a: Int, _ b: Int) -> Int { a - floorDiv(a, b) * b }
}

// MARK: - Field parsing

/// One of the five fields: its bounds and names.
private struct Field: Sendable {
    let number: Int
    let name: String
    let range: ClosedRange<Int>
    /// Where `*` and `a/n` end; day of week stops at 6 so they never add 7.
    let implicitEnd: Int
    let names: [String]          // names[i] stands for range.lowerBound + i
    let allowsQuestionMark: Bool

    static let all: [Field] = [
        Field(number: 1, name: "minute", range: 0...59, implicitEnd: 59, names: [], allowsQuestionMark: false),
        Field(number: 2, name: "hour", range: 0...23, implicitEnd: 23, names: [], allowsQuestionMark: false),
        Field(number: 3, name: "day-of-month", range: 1...31, implicitEnd: 31, names: [], allowsQuestionMark: true),
        Field(number: 4, name: "month", range: 1...12, implicitEnd: 12,
              names: ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
              allowsQuestionMark: false),
        Field(number: 5, name: "day-of-week", range: 0...7, implicitEnd: 6,
              names: ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"], allowsQuestionMark: true),
    ]

    /// Parses one field into a bit set; `star` is true for an unrestricted field.
    func parse(_ text: String) throws -> (bits: UInt64, star: Bool) {
        var bits: UInt64 = 0
        var star = false
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard !item.isEmpty else { throw CronError("empty item in list \"\(text)\"") }
            let pieces = item.split(separator: "/", omittingEmptySubsequences: false)
            guard pieces.count <= 2 else { throw CronError("too many '/' in \"\(item)\"") }
            var step = 1
            if pieces.count == 2 {
                guard let value = Int(pieces[1]), pieces[1].allSatisfy({ $0.isASCII && $0.isNumber }) else {
                    throw CronError("step \"\(pieces[1])\" is not a number")
                }
                guard value >= 1 else { throw CronError("step \(value) must be at least 1") }
                step = value
            }

            let base = pieces[0]
            let low: Int, high: Int
            if base == "*" || (base == "?" && allowsQuestionMark) {
                (low, high) = (range.lowerBound, implicitEnd)
                if step == 1 { star = true }
            } else {
                let ends = base.split(separator: "-", omittingEmptySubsequences: false)
                guard ends.count <= 2, !ends.contains(where: \.isEmpty) else {
                    throw CronError("\"\(base)\" is not a value or range a-b")
                }
                low = try value(ends[0])
                if ends.count == 2 {
                    high = try value(ends[1])
                    guard low <= high else { throw CronError("range \(ends[0])-\(ends[1]) is reversed") }
                } else {
                    high = pieces.count == 2 ? max(low, implicitEnd) : low
                }
            }
            for value in stride(from: low, through: high, by: step) { bits |= 1 << UInt64(value) }
        }
        return (bits, star)
    }

    private func value(_ text: Substring) throws -> Int {
        if let index = names.firstIndex(of: text.uppercased()) { return range.lowerBound + index }
        guard !text.isEmpty, text.allSatisfy({ $0.isASCII && $0.isNumber }) else {
            let kind = names.isEmpty ? "a number" : "a number or name (\(names[0])-\(names[names.count - 1]))"
            throw CronError("\"\(text)\" is not \(kind)")
        }
        guard let number = Int(text), range.contains(number) else {
            throw CronError("\(text) is not within \(range.lowerBound)-\(range.upperBound)")
        }
        return number
    }
}
