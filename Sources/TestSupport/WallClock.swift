import Foundation

/// Time zones the calendar tests use.
public let utc = TimeZone(identifier: "UTC")!
public let berlin = TimeZone(identifier: "Europe/Berlin")!

/// "2025-04-21 11:00" or "2025-04-21 11:00:30" as wall time in `zone` (retention and cron tests).
public func at(_ text: String, _ zone: TimeZone = utc) -> Date {
    let numbers = text.split(whereSeparator: { "-: ".contains($0) }).map { Int($0)! }
    var calendar = Calendar(identifier: .gregorian)
    calendar.timeZone = zone
    let parts = DateComponents(
        year: numbers[0], month: numbers[1], day: numbers[2],
        hour: numbers.count > 3 ? numbers[3] : 0, minute: numbers.count > 4 ? numbers[4] : 0,
        second: numbers.count > 5 ? numbers[5] : 0)
    return calendar.date(from: parts)!
}
