import ControllerCore
import Foundation
import Logging
import Yams

/// The resources of one installation, one YAML file each under `<stateDir>/resources/<Kind>/`,
/// written atomically (a unique temporary name, then rename). Secrets are readable by their
/// owner only. A file that cannot be read is reported and skipped, never fatal to the others.
public struct FileResourceStore: ResourceStore, SecretStore {
    public let root: String
    let logger: Logger
    /// How often `changes` looks for new files.
    let pollInterval: Duration

    public init(stateDir: String, logger: Logger, pollInterval: Duration = .seconds(1)) {
        root = stateDir + "/resources"
        self.logger = logger
        self.pollInterval = pollInterval
    }

    public func path(_ kind: ResourceKind, _ name: String) -> String { "\(root)/\(kind.rawValue)/\(name).yaml" }

    public func exists(_ kind: ResourceKind, _ name: String) -> Bool { FileManager.default.fileExists(atPath: path(kind, name)) }

    public func names(_ kind: ResourceKind) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "\(root)/\(kind.rawValue)")) ?? [])
            .filter { $0.hasSuffix(".yaml") }.map { String($0.dropLast(5)) }.sorted()
    }

    public func text(_ kind: ResourceKind, _ name: String) throws -> String {
        guard let text = try? String(contentsOfFile: path(kind, name), encoding: .utf8) else {
            throw ControllerError(.notFound, "\(kind.rawValue) \(name) not found")
        }
        return text
    }

    public func load<T: CheResource>(_ type: T.Type, _ name: String) throws -> T {
        let text = try text(T.kind, name)
        do { return try YAMLDecoder().decode(T.self, from: text) } catch {
            throw ControllerError(.invalidResource, "\(T.kind.rawValue) \(name) is damaged: \(Installation.describe(error))")
        }
    }

    public func write<T: CheResource>(_ value: T) throws {
        let kind = T.kind
        let name = value.metadata.name
        let dir = "\(root)/\(kind.rawValue)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let text = try YAMLEncoder().encode(value)
        let temp = "\(dir)/.\(name).\(getpid()).\(UInt64.random(in: 0...UInt64.max)).tmp"
        guard FileManager.default.createFile(atPath: temp, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw ControllerError(.store, "cannot write \(kind.rawValue) \(name) in \(dir): \(String(cString: strerror(errno)))")
        }
        guard rename(temp, path(kind, name)) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temp)
            throw ControllerError(.store, "cannot save \(kind.rawValue) \(name) in \(dir): \(reason)")
        }
    }

    // MARK: ResourceStore

    public func get<R: CheResource>(_ type: R.Type, _ name: String) async throws -> R? {
        exists(R.kind, name) ? try load(R.self, name) : nil
    }

    public func list<R: CheResource>(_ type: R.Type) async throws -> [R] {
        names(R.kind).compactMap { name in
            do { return try load(R.self, name) } catch {
                logger.error("skipping \(R.kind.rawValue) \(name): \(describe(error))")
                return nil
            }
        }
    }

    public func create<R: CheResource>(_ resource: R, replace: Bool) async throws {
        if !replace && exists(R.kind, resource.metadata.name) {
            throw ControllerError(.invalidResource, "\(R.kind.rawValue) \(resource.metadata.name) already exists")
        }
        var resource = resource
        if resource.metadata.creationTimestamp == nil { resource.metadata.creationTimestamp = Engine.now() }
        try write(resource)
    }

    public func delete<R: CheResource>(_ type: R.Type, _ name: String) async throws -> Bool {
        unlink(path(R.kind, name)) == 0
    }

    public func updateStatus<R: StatusResource>(_ type: R.Type, _ name: String, _ status: R.Status) async throws {
        var resource = try load(R.self, name)
        resource.status = status
        try write(resource)
    }

    /// Polls the directory: every resource first, then each new or changed file once.
    public func changes<R: CheResource>(_ type: R.Type) -> AsyncThrowingStream<R, any Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                var seen: [String: String] = [:]
                while !Task.isCancelled {
                    for name in names(R.kind) {
                        guard let text = try? self.text(R.kind, name), seen[name] != text else { continue }
                        seen[name] = text
                        do { continuation.yield(try load(R.self, name)) } catch {
                            logger.error("skipping \(R.kind.rawValue) \(name): \(describe(error))")
                        }
                    }
                    try? await Task.sleep(for: pollInterval)
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// Local mode keeps no event history: the note goes to the log (the result is logged anyway).
    public func record<R: CheResource>(_ resource: R, reason: String, message: String, warning: Bool) async {
        logger.info("\(R.kind.rawValue) \(resource.metadata.name): \(reason): \(message)")
    }

    // MARK: SecretStore

    public func secret(_ name: String) async throws -> Secret? { try await get(Secret.self, name) }

    public func save(_ secret: Secret) async throws { try write(secret) }
}
