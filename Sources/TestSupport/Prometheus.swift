import Foundation

/// A scraped Prometheus text exposition: each sample's name, labels and value.
public struct ScrapedMetrics: Sendable {
    public struct Sample: Sendable, Equatable {
        public var name: String
        public var labels: [String: String]
        public var value: Double
    }

    public var samples: [Sample] = []
    /// `# TYPE name kind` lines.
    public var types: [String: String] = [:]

    /// Parses the text format (version 0.0.4): comments, `name value` and `name{a="b",…} value`.
    public init(parsing text: String) throws {
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty { continue }
            if line.hasPrefix("# TYPE ") {
                let parts = line.dropFirst(7).split(separator: " ")
                if parts.count == 2 { types[String(parts[0])] = String(parts[1]) }
                continue
            }
            if line.hasPrefix("#") { continue }
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                throw ConformanceFailure("not a sample line: \(line)")
            }
            let key = line[..<space]
            var labels: [String: String] = [:]
            var name = String(key)
            if let open = key.firstIndex(of: "{") {
                guard key.hasSuffix("}") else { throw ConformanceFailure("unclosed labels: \(line)") }
                name = String(key[..<open])
                let body = key[key.index(after: open)..<key.index(before: key.endIndex)]
                var rest = Substring(body)
                while !rest.isEmpty {
                    guard let eq = rest.firstIndex(of: "="), rest[rest.index(after: eq)] == "\"" else { throw ConformanceFailure("bad label in \(line)") }
                    let label = String(rest[..<eq])
                    var i = rest.index(eq, offsetBy: 2)
                    var value = ""
                    while i < rest.endIndex, rest[i] != "\"" {
                        if rest[i] == "\\", rest.index(after: i) < rest.endIndex { i = rest.index(after: i) }
                        value.append(rest[i])
                        i = rest.index(after: i)
                    }
                    guard i < rest.endIndex else { throw ConformanceFailure("unterminated label value in \(line)") }
                    labels[label] = value
                    rest = rest[rest.index(after: i)...]
                    if rest.hasPrefix(",") { rest = rest.dropFirst() }
                }
            }
            samples.append(Sample(name: name, labels: labels, value: value))
        }
    }

    /// The value of the sample `name` whose labels include `labels`; nil when there is none.
    public func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { sample in sample.name == name && labels.allSatisfy { k, v in sample.labels[k] == v } }?.value
    }
}
