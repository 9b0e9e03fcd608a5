import Foundation
import Yams

/// Che's backup custom resources (org.eclipse.che/v1), as the Che operator defined them, and the
/// Kubernetes Secret they refer to. In local mode they live as YAML files in the state directory.
struct ObjectMeta: Codable, Sendable {
    var name: String
    var namespace: String?
    var creationTimestamp: String?
}

struct RestServerSpec: Codable, Sendable {
    var `protocol`: String?
    var hostname: String
    var port: Int?
    var repositoryPath: String
    var repositoryPasswordSecretRef: String
    var credentialsSecretRef: String?
}

struct AwsS3ServerSpec: Codable, Sendable {
    var `protocol`: String?
    var hostname: String?
    var port: Int?
    var repositoryPath: String
    var repositoryPasswordSecretRef: String
    var awsAccessKeySecretRef: String
}

struct SftpServerSpec: Codable, Sendable {
    var username: String
    var hostname: String
    var port: Int?
    var repositoryPath: String
    var repositoryPasswordSecretRef: String
    var sshKeySecretRef: String
}

struct CheBackupServerConfiguration: Codable, Sendable {
    struct Spec: Codable, Sendable {
        var rest: RestServerSpec?
        var awss3: AwsS3ServerSpec?
        var sftp: SftpServerSpec?
    }
    var apiVersion = "org.eclipse.che/v1"
    var kind = "CheBackupServerConfiguration"
    var metadata: ObjectMeta
    var spec: Spec
}

/// state: InProgress, Succeeded or Failed; stage: the step in progress; message: times or `Error: …`.
struct OperationStatus: Codable, Sendable {
    var state: String?
    var stage: String?
    var message: String?
    var snapshotId: String?
    var cheVersion: String?
}

/// A resource that carries out an operation and reports it in its status.
protocol OperationResource: Codable, Sendable {
    static var kind: ResourceKind { get }
    var status: OperationStatus? { get set }
}

struct CheClusterBackup: OperationResource {
    static let kind = ResourceKind.backup
    struct Spec: Codable, Sendable {
        var useInternalBackupServer: Bool?
        var backupServerConfigRef: String?
    }
    var apiVersion = "org.eclipse.che/v1"
    var kind = "CheClusterBackup"
    var metadata: ObjectMeta
    var spec: Spec
    var status: OperationStatus?
}

struct CheClusterRestore: OperationResource {
    static let kind = ResourceKind.restore
    struct Spec: Codable, Sendable {
        var snapshotId: String?
        var backupServerConfigRef: String?
        /// Restore a snapshot of another namespace or domain, rewriting them (che-backup's addition).
        var relocate: Bool?
    }
    var apiVersion = "org.eclipse.che/v1"
    var kind = "CheClusterRestore"
    var metadata: ObjectMeta
    var spec: Spec
    var status: OperationStatus?
}

struct Secret: Codable, Sendable {
    var apiVersion = "v1"
    var kind = "Secret"
    var metadata: ObjectMeta
    var data: [String: String]?
    var stringData: [String: String]?

    /// The value of `key`, from stringData or base64 data.
    func value(_ key: String) -> String? {
        if let s = stringData?[key] { return s }
        return data?[key].flatMap { Data(base64Encoded: $0) }.map { String(decoding: $0, as: UTF8.self) }
    }
}

enum ResourceKind: String, CaseIterable, Sendable {
    case backupServerConfiguration = "CheBackupServerConfiguration"
    case backup = "CheClusterBackup"
    case restore = "CheClusterRestore"
    case secret = "Secret"

    /// Accepts the kind, its plural and short forms, case-insensitively (as kubectl does).
    init?(loose: String) {
        let l = loose.lowercased()
        switch l {
        case "chebackupserverconfiguration", "chebackupserverconfigurations", "backupserverconfiguration": self = .backupServerConfiguration
        case "checlusterbackup", "checlusterbackups", "backup", "backups": self = .backup
        case "checlusterrestore", "checlusterrestores", "restore", "restores": self = .restore
        case "secret", "secrets": self = .secret
        default: return nil
        }
    }
}

/// The resources of one installation, one YAML file each under `<stateDir>/resources/<Kind>/`.
/// Secrets are written readable by their owner only.
struct ResourceStore: Sendable {
    let root: String

    init(stateDir: String) { root = stateDir + "/resources" }

    func path(_ kind: ResourceKind, _ name: String) -> String { "\(root)/\(kind.rawValue)/\(name).yaml" }

    func exists(_ kind: ResourceKind, _ name: String) -> Bool { FileManager.default.fileExists(atPath: path(kind, name)) }

    func load<T: Decodable>(_ kind: ResourceKind, _ name: String, as: T.Type) throws -> T {
        guard let text = try? String(contentsOfFile: path(kind, name), encoding: .utf8) else {
            throw CLIError("\(kind.rawValue) \(name) not found")
        }
        do { return try YAMLDecoder().decode(T.self, from: text) } catch {
            throw CLIError("\(kind.rawValue) \(name) is damaged: \(Installation.describe(error))")
        }
    }

    func save<T: Encodable>(_ kind: ResourceKind, _ name: String, _ value: T) throws {
        let dir = "\(root)/\(kind.rawValue)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let text = try YAMLEncoder().encode(value)
        let temp = path(kind, name) + ".tmp"
        guard FileManager.default.createFile(atPath: temp, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]),
              rename(temp, path(kind, name)) == 0 else {
            throw CLIError("cannot save \(kind.rawValue) \(name) in \(dir)")
        }
    }

    func delete(_ kind: ResourceKind, _ name: String) throws {
        guard unlink(path(kind, name)) == 0 else { throw CLIError("\(kind.rawValue) \(name) not found") }
    }

    func names(_ kind: ResourceKind) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "\(root)/\(kind.rawValue)")) ?? [])
            .filter { $0.hasSuffix(".yaml") }.map { String($0.dropLast(5)) }.sorted()
    }

    func text(_ kind: ResourceKind, _ name: String) throws -> String {
        guard let text = try? String(contentsOfFile: path(kind, name), encoding: .utf8) else {
            throw CLIError("\(kind.rawValue) \(name) not found")
        }
        return text
    }
}
