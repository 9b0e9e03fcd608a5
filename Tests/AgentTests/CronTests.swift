/// Tests for `CronSchedule`: every syntax form, every error, next/previous,
/// the day-of-month OR day-of-week rule, leap days and DST in Europe/Berlin.
import Foundation
import ControllerCore
import Testing
import TestSupport


/// The first `count` due times after `start` (UTC wall-clock text).
func upcoming(_ schedule: String, after start: String, count: Int = 3, zone: TimeZone = utc) throws -> [Date] {
    let cron = try CronSchedule(parsing: schedule)
    var result: [Date] = []
    var cursor = at(start, zone)
    for _ in 0..<count {
        guard let due = cron.next(after: cursor, in: zone) else { break }
        result.append(due)
        cursor = due
    }
    return result
}

struct SyntaxCase: Sendable, CustomTestStringConvertible {
    var schedule: String
    var after: String
    var expected: [String]
    var testDescription: String { schedule }
}

@Test(arguments: [
    SyntaxCase(schedule: "* * * * *", after: "2025-01-01 00:00:30",
               expected: ["2025-01-01 00:01", "2025-01-01 00:02", "2025-01-01 00:03"]),
    SyntaxCase(schedule: "5 * * * *", after: "2025-01-01 00:05",
               expected: ["2025-01-01 01:05", "2025-01-01 02:05", "2025-01-01 03:05"]),
    SyntaxCase(schedule: "10-12 * * * *", after: "2025-01-01 00:00",
               expected: ["2025-01-01 00:10", "2025-01-01 00:11", "2025-01-01 00:12", "2025-01-01 01:10"]),
    SyntaxCase(schedule: "*/20 * * * *", after: "2025-01-01 00:00",
               expected: ["2025-01-01 00:20", "2025-01-01 00:40", "2025-01-01 01:00"]),
    SyntaxCase(schedule: "10-30/10 * * * *", after: "2025-01-01 00:00",
               expected: ["2025-01-01 00:10", "2025-01-01 00:20", "2025-01-01 00:30", "2025-01-01 01:10"]),
    SyntaxCase(schedule: "50/5 * * * *", after: "2025-01-01 00:00",
               expected: ["2025-01-01 00:50", "2025-01-01 00:55", "2025-01-01 01:50"]),
    SyntaxCase(schedule: "1,3,7 4,5 * * *", after: "2025-01-01 00:00",
               expected: ["2025-01-01 04:01", "2025-01-01 04:03", "2025-01-01 04:07", "2025-01-01 05:01"]),
    SyntaxCase(schedule: "0 0 1 jan,Jul *", after: "2025-01-02 00:00",
               expected: ["2025-07-01 00:00", "2026-01-01 00:00"]),
    SyntaxCase(schedule: "0 0 1 MAR-may *", after: "2025-01-01 00:00",
               expected: ["2025-03-01 00:00", "2025-04-01 00:00", "2025-05-01 00:00", "2026-03-01 00:00"]),
    SyntaxCase(schedule: "0 0 1 */4 *", after: "2025-01-01 00:00",
               expected: ["2025-05-01 00:00", "2025-09-01 00:00", "2026-01-01 00:00"]),
    // 2025-06-20 is a Friday.
    SyntaxCase(schedule: "0 0 * * mon-FRI", after: "2025-06-19 12:00",
               expected: ["2025-06-20 00:00", "2025-06-23 00:00", "2025-06-24 00:00"]),
    SyntaxCase(schedule: "0 0 * * 7", after: "2025-06-19 12:00", expected: ["2025-06-22 00:00", "2025-06-29 00:00"]),
    SyntaxCase(schedule: "0 0 * * 0", after: "2025-06-19 12:00", expected: ["2025-06-22 00:00", "2025-06-29 00:00"]),
    SyntaxCase(schedule: "0 0 * * sun", after: "2025-06-19 12:00", expected: ["2025-06-22 00:00", "2025-06-29 00:00"]),
    SyntaxCase(schedule: "0 0 * * 5-7", after: "2025-06-19 12:00",
               expected: ["2025-06-20 00:00", "2025-06-21 00:00", "2025-06-22 00:00", "2025-06-27 00:00"]),
    SyntaxCase(schedule: "0 0 * * */2", after: "2025-06-19 12:00", // Sun, Tue, Thu, Sat
               expected: ["2025-06-21 00:00", "2025-06-22 00:00", "2025-06-24 00:00"]),
    SyntaxCase(schedule: "0 0 ? * 1", after: "2025-06-19 12:00", expected: ["2025-06-23 00:00", "2025-06-30 00:00"]),
    SyntaxCase(schedule: "  0\t6  * * *  ", after: "2025-06-19 12:00", expected: ["2025-06-20 06:00"]),
    SyntaxCase(schedule: "@yearly", after: "2025-01-01 00:00", expected: ["2026-01-01 00:00", "2027-01-01 00:00"]),
    SyntaxCase(schedule: "@annually", after: "2025-01-01 00:00", expected: ["2026-01-01 00:00"]),
    SyntaxCase(schedule: "@monthly", after: "2025-01-01 00:00", expected: ["2025-02-01 00:00", "2025-03-01 00:00"]),
    SyntaxCase(schedule: "@weekly", after: "2025-06-19 12:00", expected: ["2025-06-22 00:00", "2025-06-29 00:00"]),
    SyntaxCase(schedule: "@daily", after: "2025-12-31 23:59", expected: ["2026-01-01 00:00", "2026-01-02 00:00"]),
    SyntaxCase(schedule: "@midnight", after: "2025-12-31 00:00", expected: ["2026-01-01 00:00"]),
    SyntaxCase(schedule: "@HOURLY", after: "2025-12-31 23:00", expected: ["2026-01-01 00:00", "2026-01-01 01:00"]),
])
func syntax(_ test: SyntaxCase) throws {
    #expect(try upcoming(test.schedule, after: test.after, count: test.expected.count) == test.expected.map { at($0) })
}

@Test func timeZonePrefix() throws {
    let cron = try CronSchedule(parsing: "CRON_TZ=Europe/Berlin 0 3 * * *")
    #expect(cron.timeZone == berlin)
    #expect(cron.description == "CRON_TZ=Europe/Berlin 0 3 * * *")
    // The prefix wins over the zone passed in.
    #expect(cron.next(after: at("2025-01-01 00:00"), in: utc) == at("2025-01-01 02:00"))
    #expect(cron.next(after: at("2025-07-01 00:00"), in: utc) == at("2025-07-01 01:00"))
    let tokyo = try CronSchedule(parsing: "TZ=Asia/Tokyo @daily")
    #expect(tokyo.next(after: at("2025-01-01 00:00"), in: berlin) == at("2025-01-01 15:00"))
}

@Test func descriptionAndEquality() throws {
    #expect(try CronSchedule(parsing: "0 3 * * 1-5").description == "0 3 * * 1-5")
    #expect(try CronSchedule(parsing: "@daily") == CronSchedule(parsing: "@daily"))
    #expect(try CronSchedule(parsing: "0 3 * * *") != CronSchedule(parsing: "0 4 * * *"))
}

@Test(arguments: [
    ("", "empty cron schedule"),
    (" \n ", "empty cron schedule"),
    ("0 0 * *", "\"0 0 * *\": expected 5 fields (minute hour day-of-month month day-of-week), found 4"),
    ("0 0 * * * *", "\"0 0 * * * *\": expected 5 fields (minute hour day-of-month month day-of-week), found 6"),
    ("60 * * * *", "field 1 (minute) of \"60 * * * *\": 60 is not within 0-59"),
    ("0 25 * * *", "field 2 (hour) of \"0 25 * * *\": 25 is not within 0-23"),
    ("0 25\n* * *", "field 2 (hour) of \"0 25 * * *\": 25 is not within 0-23"),
    ("0 0 0 * *", "field 3 (day-of-month) of \"0 0 0 * *\": 0 is not within 1-31"),
    ("0 0 32 * *", "field 3 (day-of-month) of \"0 0 32 * *\": 32 is not within 1-31"),
    ("0 0 * 13 *", "field 4 (month) of \"0 0 * 13 *\": 13 is not within 1-12"),
    ("0 0 * * 8", "field 5 (day-of-week) of \"0 0 * * 8\": 8 is not within 0-7"),
    ("0 0 1-40 * *", "field 3 (day-of-month) of \"0 0 1-40 * *\": 40 is not within 1-31"),
    ("99999999999999999999 * * * *",
     "field 1 (minute) of \"99999999999999999999 * * * *\": 99999999999999999999 is not within 0-59"),
    ("*/0 * * * *", "field 1 (minute) of \"*/0 * * * *\": step 0 must be at least 1"),
    ("0 1-5/0 * * *", "field 2 (hour) of \"0 1-5/0 * * *\": step 0 must be at least 1"),
    ("*/x * * * *", "field 1 (minute) of \"*/x * * * *\": step \"x\" is not a number"),
    ("*/-1 * * * *", "field 1 (minute) of \"*/-1 * * * *\": step \"-1\" is not a number"),
    ("5-1 * * * *", "field 1 (minute) of \"5-1 * * * *\": range 5-1 is reversed"),
    ("0 0 * * FRI-MON", "field 5 (day-of-week) of \"0 0 * * FRI-MON\": range FRI-MON is reversed"),
    ("x * * * *", "field 1 (minute) of \"x * * * *\": \"x\" is not a number"),
    ("0 0 * FOO *", "field 4 (month) of \"0 0 * FOO *\": \"FOO\" is not a number or name (JAN-DEC)"),
    ("0 0 * * SUNDAY", "field 5 (day-of-week) of \"0 0 * * SUNDAY\": \"SUNDAY\" is not a number or name (SUN-SAT)"),
    ("0 JAN * * *", "field 2 (hour) of \"0 JAN * * *\": \"JAN\" is not a number"),
    ("? * * * *", "field 1 (minute) of \"? * * * *\": \"?\" is not a number"),
    ("1,,2 * * * *", "field 1 (minute) of \"1,,2 * * * *\": empty item in list \"1,,2\""),
    ("1, * * * *", "field 1 (minute) of \"1, * * * *\": empty item in list \"1,\""),
    ("1/2/3 * * * *", "field 1 (minute) of \"1/2/3 * * * *\": too many '/' in \"1/2/3\""),
    ("1-2-3 * * * *", "field 1 (minute) of \"1-2-3 * * * *\": \"1-2-3\" is not a value or range a-b"),
    ("-1 * * * *", "field 1 (minute) of \"-1 * * * *\": \"-1\" is not a value or range a-b"),
    ("/5 * * * *", "field 1 (minute) of \"/5 * * * *\": \"\" is not a value or range a-b"),
    ("@every 5m", "\"@every 5m\": unknown descriptor @every (use @yearly, @annually, @monthly, @weekly, "
        + "@daily, @midnight or @hourly)"),
    ("@reboot", "\"@reboot\": unknown descriptor @reboot (use @yearly, @annually, @monthly, @weekly, "
        + "@daily, @midnight or @hourly)"),
    ("@daily 0", "\"@daily 0\": @daily takes no further fields"),
    ("CRON_TZ=Mars/Olympus 0 0 * * *", "\"CRON_TZ=Mars/Olympus 0 0 * * *\": unknown time zone \"Mars/Olympus\""),
    ("TZ= 0 0 * * *", "\"TZ= 0 0 * * *\": unknown time zone \"\""),
    ("TZ=UTC", "\"TZ=UTC\": no schedule after TZ=UTC"),
])
func parseErrors(_ text: String, _ message: String) {
    #expect(throws: CronError(message)) { try CronSchedule(parsing: text) }
    #expect(!message.contains("\n"))
}

@Test func everyFifteenMinutes() throws {
    let cron = try CronSchedule(parsing: "*/15 * * * *")
    #expect(cron.next(after: at("2025-06-01 10:07:30"), in: utc) == at("2025-06-01 10:15"))
    #expect(cron.next(after: at("2025-06-01 10:15"), in: utc) == at("2025-06-01 10:30")) // strictly after
    #expect(cron.next(after: at("2025-06-01 10:59:59"), in: utc) == at("2025-06-01 11:00"))
    #expect(cron.next(after: at("2025-12-31 23:45"), in: utc) == at("2026-01-01 00:00"))
    #expect(cron.previous(atOrBefore: at("2025-06-01 10:15"), in: utc) == at("2025-06-01 10:15"))
    #expect(cron.previous(atOrBefore: at("2025-06-01 10:15:30"), in: utc) == at("2025-06-01 10:15"))
    #expect(cron.previous(atOrBefore: at("2025-06-01 10:14:59"), in: utc) == at("2025-06-01 10:00"))
    #expect(cron.previous(atOrBefore: at("2025-06-01 00:05"), in: utc) == at("2025-06-01 00:00"))
    #expect(cron.previous(atOrBefore: at("2025-01-01 00:14"), in: utc) == at("2025-01-01 00:00"))
    #expect(cron.previous(atOrBefore: at("2024-12-31 23:59"), in: utc) == at("2024-12-31 23:45"))
    #expect(cron.matches(at("2025-06-01 10:45:59"), in: utc))
    #expect(!cron.matches(at("2025-06-01 10:46"), in: utc))
}

@Test func weekdaysAtThree() throws {
    let cron = try CronSchedule(parsing: "0 3 * * 1-5")
    // 2025-06-20 is a Friday, 2025-06-23 a Monday.
    #expect(cron.next(after: at("2025-06-20 03:00"), in: utc) == at("2025-06-23 03:00"))
    #expect(cron.next(after: at("2025-06-21 10:00"), in: utc) == at("2025-06-23 03:00"))
    #expect(cron.next(after: at("2025-06-23 02:59"), in: utc) == at("2025-06-23 03:00"))
    #expect(cron.previous(atOrBefore: at("2025-06-22 12:00"), in: utc) == at("2025-06-20 03:00"))
    #expect(cron.previous(atOrBefore: at("2025-06-23 02:59"), in: utc) == at("2025-06-20 03:00"))
    #expect(cron.previous(atOrBefore: at("2025-06-23 03:00"), in: utc) == at("2025-06-23 03:00"))
    // The same wall time in another zone.
    #expect(cron.next(after: at("2025-06-20 03:00"), in: berlin) == at("2025-06-23 03:00", berlin))
}

@Test func dailyAndYearly() throws {
    let daily = try CronSchedule(parsing: "@daily")
    #expect(daily.previous(atOrBefore: at("2026-01-01 00:00"), in: utc) == at("2026-01-01 00:00"))
    #expect(daily.previous(atOrBefore: at("2026-01-01 23:59"), in: utc) == at("2026-01-01 00:00"))
    let newYear = try CronSchedule(parsing: "0 0 1 1 *")
    #expect(newYear.next(after: at("2025-01-01 00:00"), in: utc) == at("2026-01-01 00:00"))
    #expect(newYear.next(after: at("2024-12-31 23:59:59"), in: utc) == at("2025-01-01 00:00"))
    #expect(newYear.previous(atOrBefore: at("2025-12-31 23:59"), in: utc) == at("2025-01-01 00:00"))
}

@Test func dayOfMonthOrDayOfWeek() throws {
    // Both restricted: the 13th OR any Friday. June 2025 has Fridays 6, 13, 20, 27;
    // 13 July 2025 is a Sunday.
    #expect(try upcoming("0 12 13 * 5", after: "2025-06-01 00:00", count: 7) == [
        "2025-06-06 12:00", "2025-06-13 12:00", "2025-06-20 12:00", "2025-06-27 12:00",
        "2025-07-04 12:00", "2025-07-11 12:00", "2025-07-13 12:00",
    ].map { at($0) })
    let cron = try CronSchedule(parsing: "0 12 13 * 5")
    #expect(cron.previous(atOrBefore: at("2025-07-13 11:59"), in: utc) == at("2025-07-11 12:00"))
    // One side unrestricted ("*" or "*/1"): both must match, i.e. Fridays only.
    #expect(try upcoming("0 12 * * 5", after: "2025-07-05 00:00", count: 2) == [at("2025-07-11 12:00"), at("2025-07-18 12:00")])
    #expect(try upcoming("0 12 */1 * 5", after: "2025-07-05 00:00", count: 2) == [at("2025-07-11 12:00"), at("2025-07-18 12:00")])
    #expect(try upcoming("0 12 13 * *", after: "2025-06-01 00:00", count: 2) == [at("2025-06-13 12:00"), at("2025-07-13 12:00")])
    // "*/2" is a restriction (as in robfig/cron): odd days OR Fridays.
    #expect(try upcoming("0 0 */2 * 5", after: "2025-07-01 00:00", count: 4) == [
        "2025-07-03 00:00", "2025-07-04 00:00", "2025-07-05 00:00", "2025-07-07 00:00",
    ].map { at($0) })
}

@Test func leapDay() throws {
    let cron = try CronSchedule(parsing: "0 0 29 2 *")
    #expect(cron.next(after: at("2025-03-01 00:00"), in: utc) == at("2028-02-29 00:00"))
    #expect(cron.previous(atOrBefore: at("2025-03-01 00:00"), in: utc) == at("2024-02-29 00:00"))
    // 2100 is not a leap year: eight years from 2096 to 2104.
    #expect(cron.next(after: at("2096-03-01 00:00"), in: utc) == at("2104-02-29 00:00"))
}

@Test(arguments: ["0 0 31 4 *", "0 0 30 2 *", "0 0 31 JUN,SEP,NOV *"])
func impossibleDates(_ schedule: String) throws {
    let cron = try CronSchedule(parsing: schedule)
    #expect(cron.next(after: at("2025-01-01 00:00"), in: utc) == nil)
    #expect(cron.previous(atOrBefore: at("2025-01-01 00:00"), in: utc) == nil)
}

@Test func springForwardInBerlin() throws {
    // On 2026-03-29 Berlin jumps from 02:00 CET to 03:00 CEST: 02:30 never happens.
    let cron = try CronSchedule(parsing: "30 2 * * *")
    #expect(cron.next(after: at("2026-03-28 12:00", berlin), in: berlin) == at("2026-03-30 00:30"))
    #expect(cron.previous(atOrBefore: at("2026-03-29 12:00", berlin), in: berlin) == at("2026-03-28 01:30"))
    #expect(!cron.matches(at("2026-03-29 01:30"), in: berlin)) // 03:30 CEST
    // Every half hour: 01:30 CET is followed by 03:00 CEST, thirty real minutes later.
    let halfHourly = try CronSchedule(parsing: "*/30 * * * *")
    #expect(halfHourly.next(after: at("2026-03-29 00:30"), in: berlin) == at("2026-03-29 01:00"))
    #expect(halfHourly.previous(atOrBefore: at("2026-03-29 00:59"), in: berlin) == at("2026-03-29 00:30"))
    let three = try CronSchedule(parsing: "0 3 * * *")
    #expect(three.next(after: at("2026-03-29 00:00"), in: berlin) == at("2026-03-29 01:00"))
}

@Test func fallBackInBerlin() throws {
    // On 2026-10-25 Berlin goes from 03:00 CEST back to 02:00 CET: 02:30 happens
    // twice (00:30 and 01:30 UTC) and runs at the first one only.
    let cron = try CronSchedule(parsing: "30 2 * * *")
    #expect(cron.next(after: at("2026-10-24 12:00", berlin), in: berlin) == at("2026-10-25 00:30"))
    #expect(cron.next(after: at("2026-10-25 00:30"), in: berlin) == at("2026-10-26 01:30"))
    #expect(cron.previous(atOrBefore: at("2026-10-25 01:45"), in: berlin) == at("2026-10-25 00:30"))
    #expect(cron.previous(atOrBefore: at("2026-10-25 00:29"), in: berlin) == at("2026-10-24 00:30"))
    // At 02:10 CET (second pass) the latest run was 02:45 CEST, a later wall time.
    let late = try CronSchedule(parsing: "45 2 * * *")
    #expect(late.previous(atOrBefore: at("2026-10-25 01:10"), in: berlin) == at("2026-10-25 00:45"))
    #expect(late.next(after: at("2026-10-25 01:10"), in: berlin) == at("2026-10-26 01:45"))
}
