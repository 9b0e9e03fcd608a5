import Foundation

/// Secrets and settings for remote backends, from the environment (Che/chectl and restic names)
/// or from command-line flags. Never printed.
public struct BackendCredentials: Sendable {
    public var restUsername: String?
    public var restPassword: String?
    public var awsAccessKeyID: String?
    public var awsSecretAccessKey: String?
    public var awsRegion = "us-east-1"
    public var sshKeyFile: String?
    /// The private key itself (SSH_KEY): written to a private temporary file for libssh2.
    public var sshKey: String?
    public var sshKnownHosts: String?
    /// A pinned host key: "SHA256:base64" as `ssh-keygen -lf` prints it, or the bare base64.
    public var sshHostFingerprint: String?
    /// A CA bundle for https servers with private certificates.
    public var caFile: String?

    public init() {}

    public static func fromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) -> BackendCredentials {
        var c = BackendCredentials()
        c.restUsername = env["REST_SERVER_USERNAME"]
        c.restPassword = env["REST_SERVER_PASSWORD"]
        c.awsAccessKeyID = env["AWS_ACCESS_KEY_ID"]
        c.awsSecretAccessKey = env["AWS_SECRET_ACCESS_KEY"]
        if let region = env["AWS_DEFAULT_REGION"] ?? env["AWS_REGION"], !region.isEmpty { c.awsRegion = region }
        c.sshKeyFile = env["SSH_KEY_FILE"]
        c.sshKey = env["SSH_KEY"]
        c.sshKnownHosts = env["SSH_KNOWN_HOSTS"]
        c.sshHostFingerprint = env["SSH_HOST_FINGERPRINT"]
        c.caFile = env["BACKUP_CA_FILE"]
        return c
    }
}

/// A private key written to a 0600 temporary file for as long as the backend lives.
final class TemporaryKeyFile: Sendable {
    let path: String

    init(contents: String) throws {
        var template = Array((NSTemporaryDirectory() + "/chebackup-key-XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw StorageError(.permanent, "cannot create a temporary file for the SSH key") }
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        fchmod(fd, 0o600)
        var text = contents
        if !text.hasSuffix("\n") { text += "\n" }
        try writeAll(fd, Data(text.utf8), path: "SSH key file")
        close(fd)
    }

    deinit { unlink(path) }
}
