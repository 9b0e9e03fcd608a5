/// Tests for `Retention`: restic's documented forget examples, re-derived by
/// hand, and the edge cases of each rule.
import Foundation
import Repository
import Testing
import TestSupport

/// A snapshot whose id is its UTC time text.
func snap(_ time: String, tags: [String] = []) -> RetentionSnapshot {
    RetentionSnapshot(id: time, time: at(time), tags: tags)
}

/// Kept ids mapped to their reasons.
func keptReasons(_ decisions: [RetentionDecision]) -> [String: [String]] {
    Dictionary(uniqueKeysWithValues: decisions.filter(\.keep).map { ($0.snapshot.id, $0.reasons) })
}

func keptIDs(_ decisions: [RetentionDecision]) -> [String] {
    decisions.filter(\.keep).map(\.snapshot.id)
}

// The example of restic's "Removing snapshots according to a policy": a backup
// every weekday for two weeks, an extra one on Fridays, Wednesday 30 April missed.
let weekdays: [RetentionSnapshot] = [
    "2025-04-21 11:00", "2025-04-22 11:00", "2025-04-23 11:00", "2025-04-24 11:00",
    "2025-04-25 11:00", "2025-04-25 23:00", "2025-04-28 11:00", "2025-04-29 11:00",
    "2025-05-01 11:00", "2025-05-02 11:00", "2025-05-02 23:00",
].map { snap($0) }

struct PolicyCase: Sendable, CustomTestStringConvertible {
    var name: String
    var policy: RetentionPolicy
    var kept: [String: [String]]
    var testDescription: String { name }
}

let documentedCases: [PolicyCase] = [
    // The documented result: one per day for the five newest days with a snapshot.
    PolicyCase(name: "keep-daily 5 (documented)", policy: RetentionPolicy(daily: 5), kept: [
        "2025-05-02 23:00": ["daily snapshot"], "2025-05-01 11:00": ["daily snapshot"],
        "2025-04-29 11:00": ["daily snapshot"], "2025-04-28 11:00": ["daily snapshot"],
        "2025-04-25 23:00": ["daily snapshot"],
    ]),
    // 7d before the newest (05-02 23:00) is 04-25 23:00, which is not strictly after.
    PolicyCase(name: "keep-within 7d", policy: RetentionPolicy(within: RetentionDuration(days: 7)), kept: [
        "2025-05-02 23:00": ["within 7d"], "2025-05-02 11:00": ["within 7d"], "2025-05-01 11:00": ["within 7d"],
        "2025-04-29 11:00": ["within 7d"], "2025-04-28 11:00": ["within 7d"],
    ]),
    PolicyCase(name: "keep-last 3", policy: RetentionPolicy(last: 3), kept: [
        "2025-05-02 23:00": ["last snapshot"], "2025-05-02 11:00": ["last snapshot"],
        "2025-05-01 11:00": ["last snapshot"],
    ]),
    PolicyCase(name: "keep-weekly 2: newest of each ISO week", policy: RetentionPolicy(weekly: 2), kept: [
        "2025-05-02 23:00": ["weekly snapshot"], "2025-04-25 23:00": ["weekly snapshot"],
    ]),
    // Only two weeks exist, so a count is left at the oldest snapshot.
    PolicyCase(name: "keep-weekly 3 keeps the oldest too", policy: RetentionPolicy(weekly: 3), kept: [
        "2025-05-02 23:00": ["weekly snapshot"], "2025-04-25 23:00": ["weekly snapshot"],
        "2025-04-21 11:00": ["oldest weekly snapshot"],
    ]),
    PolicyCase(name: "keep-daily 5 + keep-weekly 2", policy: RetentionPolicy(daily: 5, weekly: 2), kept: [
        "2025-05-02 23:00": ["daily snapshot", "weekly snapshot"], "2025-05-01 11:00": ["daily snapshot"],
        "2025-04-29 11:00": ["daily snapshot"], "2025-04-28 11:00": ["daily snapshot"],
        "2025-04-25 23:00": ["daily snapshot", "weekly snapshot"],
    ]),
    PolicyCase(name: "keep-monthly 2", policy: RetentionPolicy(monthly: 2), kept: [
        "2025-05-02 23:00": ["monthly snapshot"], "2025-04-29 11:00": ["monthly snapshot"],
    ]),
    PolicyCase(name: "keep-hourly unlimited keeps every distinct hour", policy: RetentionPolicy(hourly: -1),
               kept: Dictionary(uniqueKeysWithValues: weekdays.map { ($0.id, ["hourly snapshot"]) })),
]

@Test(arguments: documentedCases)
func documentedExample(_ test: PolicyCase) {
    let decisions = Retention.apply(weekdays.reversed(), policy: test.policy, timeZone: utc)
    #expect(decisions.map(\.snapshot.id) == weekdays.map(\.id).reversed())
    #expect(keptReasons(decisions) == test.kept)
}

/// restic's "one backup every day for 100 years" example with
/// --keep-daily 7 --keep-weekly 5 --keep-monthly 12 --keep-yearly 75, ending on
/// Sunday 2025-06-22: 7 dailies, 4 more Sundays (06-15..05-25), 11 more month
/// ends (05-31..2024-07-31) and 73 more year ends (2023..1951): 95 in all.
@Test func hundredYearsOfDailyBackups() {
    let end = at("2025-06-22 12:00")
    let snapshots = (0..<36_525).map { day in
        RetentionSnapshot(id: String(day), time: end.addingTimeInterval(-86_400 * Double(day)), tags: [])
    }
    let policy = RetentionPolicy(daily: 7, weekly: 5, monthly: 12, yearly: 75)
    let kept = Retention.apply(snapshots, policy: policy, timeZone: utc).filter(\.keep)
    func count(_ reason: String) -> Int { kept.filter { $0.reasons.contains(reason) }.count }
    #expect(count("daily snapshot") == 7)
    #expect(count("weekly snapshot") == 5)
    #expect(count("monthly snapshot") == 12)
    #expect(count("yearly snapshot") == 75)
    #expect(kept.count == 95)
    #expect(kept.last?.snapshot.time == at("1951-12-31 12:00"))
}

@Test func keepLastThreeOfTen() {
    let snapshots = (1...10).map { snap(String(format: "2025-01-%02d 08:00", $0)) }
    let decisions = Retention.apply(snapshots.shuffled(), policy: RetentionPolicy(last: 3), timeZone: utc)
    #expect(keptIDs(decisions) == ["2025-01-10 08:00", "2025-01-09 08:00", "2025-01-08 08:00"])
    #expect(decisions.count == 10)
}

@Test func hourlyKeepsNewestOfTheHour() {
    let snapshots = ["2025-03-01 10:05", "2025-03-01 10:40", "2025-03-01 09:10"].map { snap($0) }
    let decisions = Retention.apply(snapshots, policy: RetentionPolicy(hourly: 2), timeZone: utc)
    #expect(keptReasons(decisions) == ["2025-03-01 10:40": ["hourly snapshot"], "2025-03-01 09:10": ["hourly snapshot"]])
}

@Test func oldestSnapshotKeptWhileCountsRemain() {
    let snapshots = ["2025-03-01 10:05", "2025-03-01 10:40"].map { snap($0) }
    let decisions = Retention.apply(snapshots, policy: RetentionPolicy(hourly: 5), timeZone: utc)
    #expect(keptReasons(decisions) == [
        "2025-03-01 10:40": ["hourly snapshot"], "2025-03-01 10:05": ["oldest hourly snapshot"],
    ])
}

@Test func weeklyUsesISOWeeksAcrossTheYear() {
    // 2020-12-31 (Thu) and 2021-01-01 (Fri) are both in ISO week 2020-53;
    // 2020-12-27 (Sun) is in 2020-52 and 2021-01-04 (Mon) in 2021-01.
    let snapshots = ["2020-12-27 09:00", "2020-12-31 09:00", "2021-01-01 09:00", "2021-01-04 09:00"].map { snap($0) }
    let decisions = Retention.apply(snapshots, policy: RetentionPolicy(weekly: 3), timeZone: utc)
    #expect(keptReasons(decisions) == [
        "2021-01-04 09:00": ["weekly snapshot"], "2021-01-01 09:00": ["weekly snapshot"],
        "2020-12-27 09:00": ["weekly snapshot"],
    ])
    // 2024-12-30 (Mon) already belongs to ISO week 2025-01, together with 2025-01-05.
    let other = ["2024-12-29 09:00", "2024-12-30 09:00", "2025-01-05 09:00"].map { snap($0) }
    #expect(keptIDs(Retention.apply(other, policy: RetentionPolicy(weekly: 2), timeZone: utc))
        == ["2025-01-05 09:00", "2024-12-29 09:00"])
}

@Test func monthlyThirtyFirstVersusFirst() {
    let snapshots = ["2025-01-31 23:59", "2025-02-01 00:00", "2025-02-15 12:00", "2024-12-31 12:00"].map { snap($0) }
    let decisions = Retention.apply(snapshots, policy: RetentionPolicy(monthly: 2), timeZone: utc)
    #expect(keptIDs(decisions) == ["2025-02-15 12:00", "2025-01-31 23:59"])
}

@Test func yearly() {
    let snapshots = ["2022-05-05 12:00", "2023-12-31 23:59", "2024-01-01 00:00", "2024-06-01 12:00"].map { snap($0) }
    let decisions = Retention.apply(snapshots, policy: RetentionPolicy(yearly: 2), timeZone: utc)
    #expect(keptReasons(decisions) == [
        "2024-06-01 12:00": ["yearly snapshot"], "2023-12-31 23:59": ["yearly snapshot"],
    ])
}

@Test func unlimitedCounts() {
    let snapshots = ["2025-03-02 10:00", "2025-03-02 08:00", "2025-03-01 10:00", "2025-03-01 09:00"].map { snap($0) }
    // Unlimited never runs out, so the oldest snapshot is always kept as well.
    let daily = Retention.apply(snapshots, policy: RetentionPolicy(daily: -1), timeZone: utc)
    #expect(keptReasons(daily) == [
        "2025-03-02 10:00": ["daily snapshot"], "2025-03-01 10:00": ["daily snapshot"],
        "2025-03-01 09:00": ["oldest daily snapshot"],
    ])
    let last = Retention.apply(snapshots, policy: RetentionPolicy(last: RetentionPolicy.unlimited), timeZone: utc)
    #expect(last.allSatisfy { $0.keep && $0.reasons == ["last snapshot"] })
}

@Test func keepWithinIsRelativeToTheNewest() throws {
    // 1d2h before 2025-05-10 12:00 is 2025-05-09 10:00, which itself is outside.
    let snapshots = ["2025-05-10 12:00", "2025-05-09 10:01", "2025-05-09 10:00", "2025-05-08 12:00"].map { snap($0) }
    let policy = RetentionPolicy(within: try Retention.parseDuration("1d2h"))
    let decisions = Retention.apply(snapshots, policy: policy, timeZone: utc)
    #expect(keptReasons(decisions) == ["2025-05-10 12:00": ["within 1d2h"], "2025-05-09 10:01": ["within 1d2h"]])

    // A snapshot dated in the future moves the anchor, unless `now` excludes it;
    // it is then kept anyway, being after the boundary.
    let withFuture = snapshots + [snap("2030-01-01 00:00")]
    #expect(keptIDs(Retention.apply(withFuture, policy: policy, timeZone: utc)) == ["2030-01-01 00:00"])
    let excluded = Retention.apply(withFuture, policy: policy, timeZone: utc, now: at("2025-05-11 00:00"))
    #expect(keptIDs(excluded) == ["2030-01-01 00:00", "2025-05-10 12:00", "2025-05-09 10:01"])
}

struct WithinCase: Sendable, CustomTestStringConvertible {
    var duration: String
    var newest: String
    var boundary: String // the latest time not kept; one second later is kept
    var testDescription: String { "\(duration) before \(newest)" }
}

@Test(arguments: [
    WithinCase(duration: "1m", newest: "2025-05-15 12:00", boundary: "2025-04-15 12:00"),
    // Go's AddDate: 2024-02-31 overflows to 2024-03-02.
    WithinCase(duration: "1m", newest: "2024-03-31 12:00", boundary: "2024-03-02 12:00"),
    WithinCase(duration: "1y", newest: "2024-02-29 12:00", boundary: "2023-03-01 12:00"),
    WithinCase(duration: "2m", newest: "2025-01-15 00:00", boundary: "2024-11-15 00:00"),
    WithinCase(duration: "1y2m3d4h", newest: "2025-06-20 10:00", boundary: "2024-04-17 06:00"),
])
func keepWithinUsesCalendarArithmetic(_ test: WithinCase) throws {
    let boundary = at(test.boundary)
    let snapshots = [
        snap(test.newest),
        RetentionSnapshot(id: "inside", time: boundary.addingTimeInterval(1), tags: []),
        RetentionSnapshot(id: "boundary", time: boundary, tags: []),
    ]
    let policy = RetentionPolicy(within: try Retention.parseDuration(test.duration))
    #expect(keptIDs(Retention.apply(snapshots, policy: policy, timeZone: utc)) == [test.newest, "inside"])
}

@Test func keepWithinDaysFollowTheWallClock() {
    // Berlin springs forward on 2025-03-30: one day back from 12:00 CEST is
    // 12:00 CET the day before, only 23 hours earlier.
    let snapshots = [
        RetentionSnapshot(id: "newest", time: at("2025-03-30 12:00", berlin), tags: []),
        RetentionSnapshot(id: "12:30 CET", time: at("2025-03-29 12:30", berlin), tags: []),
        RetentionSnapshot(id: "11:30 CET", time: at("2025-03-29 11:30", berlin), tags: []),
    ]
    let policy = RetentionPolicy(within: RetentionDuration(days: 1))
    #expect(keptIDs(Retention.apply(snapshots, policy: policy, timeZone: berlin)) == ["newest", "12:30 CET"])
}

@Test func tags() {
    let snapshots = [
        snap("2025-01-05 00:00", tags: ["a", "b", "c"]), snap("2025-01-04 00:00", tags: ["a"]),
        snap("2025-01-03 00:00", tags: ["b", "a"]), snap("2025-01-02 00:00", tags: ["c"]),
        snap("2025-01-01 00:00"),
    ]
    let both = Retention.apply(snapshots, policy: RetentionPolicy(tags: [["a", "b"]]), timeZone: utc)
    #expect(keptReasons(both) == ["2025-01-05 00:00": ["tag a,b"], "2025-01-03 00:00": ["tag a,b"]])

    let either = Retention.apply(snapshots, policy: RetentionPolicy(tags: [["a"], ["c"]]), timeZone: utc)
    #expect(keptReasons(either) == [
        "2025-01-05 00:00": ["tag a", "tag c"], "2025-01-04 00:00": ["tag a"],
        "2025-01-03 00:00": ["tag a"], "2025-01-02 00:00": ["tag c"],
    ])

    let untagged = Retention.apply(snapshots, policy: RetentionPolicy(tags: [[""]]), timeZone: utc)
    #expect(keptReasons(untagged) == ["2025-01-01 00:00": ["tag ''"]])
}

@Test func combinedPoliciesUniteWithAllReasons() {
    let snapshots = [
        snap("2025-06-10 20:00"), snap("2025-06-10 08:00"), snap("2025-06-09 20:00"),
        snap("2025-06-08 20:00"), snap("2025-05-01 00:00", tags: ["release"]), snap("2025-04-01 00:00"),
    ]
    let policy = RetentionPolicy(last: 1, daily: 2, within: RetentionDuration(hours: 13), tags: [["release"]])
    let decisions = Retention.apply(snapshots, policy: policy, timeZone: utc)
    #expect(keptReasons(decisions) == [
        "2025-06-10 20:00": ["within 13h", "last snapshot", "daily snapshot"],
        "2025-06-10 08:00": ["within 13h"],
        "2025-06-09 20:00": ["daily snapshot"],
        "2025-05-01 00:00": ["tag release"],
    ])
    #expect(decisions.filter { !$0.keep }.map(\.snapshot.id) == ["2025-06-08 20:00", "2025-04-01 00:00"])
}

@Test func tiesAreOrderedByID() {
    let time = at("2025-02-02 02:02")
    let snapshots = ["c", "a", "b"].map { RetentionSnapshot(id: $0, time: time, tags: []) } + [snap("2025-02-01 00:00")]
    let policies = [RetentionPolicy(last: 1), RetentionPolicy(hourly: 1), RetentionPolicy(daily: 3)]
    for policy in policies {
        let reference = Retention.apply(snapshots, policy: policy, timeZone: utc)
        #expect(reference.map(\.snapshot.id) == ["a", "b", "c", "2025-02-01 00:00"])
        #expect(reference[0].keep && !reference[1].keep && !reference[2].keep)
        for _ in 0..<10 {
            #expect(Retention.apply(snapshots.shuffled(), policy: policy, timeZone: utc) == reference)
        }
    }
}

@Test func timeZoneDecidesTheDay() {
    // 23:30 UTC on 1 May is already 2 May in UTC+2.
    let snapshots = ["2025-05-01 23:30", "2025-05-01 12:00", "2025-04-30 12:00"].map { snap($0) }
    let policy = RetentionPolicy(daily: 2)
    #expect(keptIDs(Retention.apply(snapshots, policy: policy, timeZone: utc))
        == ["2025-05-01 23:30", "2025-04-30 12:00"])
    #expect(keptIDs(Retention.apply(snapshots, policy: policy, timeZone: TimeZone(secondsFromGMT: 7200)!))
        == ["2025-05-01 23:30", "2025-05-01 12:00"])
}

@Test func emptyPolicy() {
    #expect(RetentionPolicy().isEmpty)
    #expect(RetentionPolicy(last: 0, within: RetentionDuration()).isEmpty)
    #expect(!RetentionPolicy(daily: -1).isEmpty)
    #expect(!RetentionPolicy(within: RetentionDuration(hours: 1)).isEmpty)
    #expect(!RetentionPolicy(tags: [["x"]]).isEmpty)
    let decisions = Retention.apply(weekdays, policy: RetentionPolicy(), timeZone: utc)
    #expect(decisions.count == weekdays.count && decisions.allSatisfy { $0.keep && $0.reasons == ["no policy"] })
    #expect(Retention.apply([], policy: RetentionPolicy(last: 1), timeZone: utc).isEmpty)
}

@Test func validation() throws {
    try RetentionPolicy(last: -1, hourly: 0, daily: 7, within: RetentionDuration(days: 1)).validate()
    #expect(throws: RetentionError("keep-daily must be -1 (unlimited) or at least 0, not -2")) {
        try RetentionPolicy(daily: -2).validate()
    }
    #expect(throws: RetentionError("keep-within must not have negative units: -3d")) {
        try RetentionPolicy(within: RetentionDuration(days: -3)).validate()
    }
    // apply treats an invalid count as unset: alone it leaves an empty policy
    // (everything kept), next to a valid rule it is ignored.
    #expect(RetentionPolicy(last: -5).isEmpty)
    #expect(Retention.apply(weekdays, policy: RetentionPolicy(last: -5), timeZone: utc).allSatisfy { $0.keep })
    #expect(keptIDs(Retention.apply(weekdays, policy: RetentionPolicy(last: -5, daily: 1), timeZone: utc))
        == ["2025-05-02 23:00"])
}

@Test(arguments: [
    ("1y2m3d4h", RetentionDuration(years: 1, months: 2, days: 3, hours: 4)),
    ("2d", RetentionDuration(days: 2)),
    ("1d2h", RetentionDuration(days: 1, hours: 2)),
    ("36h", RetentionDuration(hours: 36)),
    (" 3m\n", RetentionDuration(months: 3)),
    ("1y4h", RetentionDuration(years: 1, hours: 4)),
    ("0d", RetentionDuration()),
])
func parseDuration(_ text: String, _ expected: RetentionDuration) throws {
    #expect(try Retention.parseDuration(text) == expected)
}

@Test(arguments: [
    ("", "invalid duration: it is empty"),
    ("5", "invalid duration \"5\": number 5 has no unit (use y, m, d or h)"),
    ("1w", "invalid duration \"1w\": unknown unit \"w\" (use y, m, d or h)"),
    ("1D", "invalid duration \"1D\": unknown unit \"D\" (use y, m, d or h)"),
    ("d", "invalid duration \"d\": expected a number at \"d\""),
    ("-1d", "invalid duration \"-1d\": expected a number at \"-1d\""),
    ("1 d", "invalid duration \"1 d\": unknown unit \" \" (use y, m, d or h)"),
    ("1d1y", "invalid duration \"1d1y\": unit \"y\" is repeated or out of order (write y, m, d, h, each at most once)"),
    ("1d1d", "invalid duration \"1d1d\": unit \"d\" is repeated or out of order (write y, m, d, h, each at most once)"),
    ("99999999999999999999y", "invalid duration \"99999999999999999999y\": number 99999999999999999999 is too large"),
])
func parseDurationErrors(_ text: String, _ message: String) {
    #expect(throws: RetentionError(message)) { try Retention.parseDuration(text) }
}

@Test func durationDescription() {
    #expect(RetentionDuration(years: 1, months: 2, days: 3, hours: 4).description == "1y2m3d4h")
    #expect(RetentionDuration(days: 2).description == "2d")
    #expect(RetentionDuration().description == "0h")
}
