import ControllerCore
import Foundation
import LineProtocol
import LocalMode
import Logging
import Storage
import Testing
import TestSupport

/// The engine's pieces that need no agent: the one server description, error sentences, the
/// local resource store under concurrency and damage.
@Suite struct EngineTests {
    struct Secrets: SecretStore {
        let all: [String: [String: String]]
        func secret(_ name: String) async throws -> Secret? {
            all[name].map { Secret(metadata: ObjectMeta(name: name), stringData: $0) }
        }
        func save(_ secret: Secret) async throws {}
    }

    func s3(region: String?) -> CheBackupServerConfiguration {
        CheBackupServerConfiguration(metadata: ObjectMeta(name: "s3"), spec: .init(awss3: AwsS3ServerSpec(
            protocol: "http", hostname: "minio", port: 9000, repositoryPath: "/bucket/che/", repositoryPasswordSecretRef: "pw",
            awsAccessKeySecretRef: "aws", region: region)))
    }

    let secrets = Secrets(all: ["pw": ["repo-password": "p"], "aws": ["awsAccessKeyId": "AK", "awsSecretAccessKey": "SK"]])

    @Test func anS3ConfigurationCarriesItsRegion() async throws {
        // Issue 11 item 9: the region came from nowhere; now from the resource, else AWS_DEFAULT_REGION.
        let own = try await BackupServer(configuration: s3(region: "eu-west-3"), secrets: secrets, environment: ["AWS_DEFAULT_REGION": "us-west-2"])
        #expect(own.secrets.awsRegion == "eu-west-3")
        #expect(own.url == "s3:http://minio:9000/bucket/che")
        #expect(own.secrets.awsAccessKeyId == "AK" && own.secrets.awsSecretAccessKey == "SK")
        let fromEnv = try await BackupServer(configuration: s3(region: nil), secrets: secrets, environment: ["AWS_DEFAULT_REGION": "us-west-2"])
        #expect(fromEnv.secrets.awsRegion == "us-west-2")
        // And back: the configuration written for `-r s3:…` keeps it.
        let (config, written) = try fromEnv.configuration(name: "c", namespace: "ns", secretPrefix: "chectl-backup-")
        #expect(config.spec.awss3?.region == "us-west-2" && config.spec.awss3?.repositoryPath == "bucket/che")
        #expect(written.map(\.metadata.name).sorted() == ["chectl-backup-aws-credentials", "chectl-backup-repo-password"])
    }

    @Test func aMissingSecretOrKeyIsNamed() async throws {
        let none = Secrets(all: ["pw": ["password": "p"]])
        await #expect(throws: ControllerError.self) { _ = try await BackupServer(configuration: s3(region: nil), secrets: none) }
        do { _ = try await BackupServer(configuration: s3(region: nil), secrets: none) } catch {
            #expect(describe(error) == "secret pw has no key \"repo-password\" (repository password)")
        }
    }

    @Test func everyErrorIsASentence() {
        // Issue 11 item 6: an agent's ErrorMessage became a struct dump in status messages.
        #expect(describe(ErrorMessage(code: .internalError, message: "pg_dump failed with exit status 1")) == "pg_dump failed with exit status 1")
        #expect(describe(ControllerError(.notFound, "secret x not found")) == "secret x not found")
    }

    @Test func concurrentStatusWritesAreNotLost() async throws {
        // Issue 11 item 5: every write used the same temporary name, so concurrent ones failed
        // or clobbered each other, and the failures were swallowed.
        let dir = TempDir()
        defer { dir.remove() }
        let store = FileResourceStore(stateDir: dir.path, logger: Logger(label: "test"))
        try store.write(CheClusterBackup(metadata: ObjectMeta(name: "b"), spec: .init()))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<64 {
                group.addTask {
                    try await store.updateStatus(CheClusterBackup.self, "b", OperationStatus(state: .inProgress, stage: "stage \(i)"))
                }
            }
            try await group.waitForAll()
        }
        let final = try store.load(CheClusterBackup.self, "b")
        #expect(final.status?.stage?.hasPrefix("stage ") == true)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.file("resources/CheClusterBackup")).filter { $0.hasSuffix(".tmp") }
        #expect(leftovers.isEmpty, "\(leftovers)")
    }

    @Test func aDamagedResourceIsSkippedNotFatal() async throws {
        // Issue 11 item 3: one unreadable resource file stopped every pass of the controller.
        let dir = TempDir()
        defer { dir.remove() }
        let store = FileResourceStore(stateDir: dir.path, logger: Logger(label: "test"))
        try store.write(CheClusterBackup(metadata: ObjectMeta(name: "good"), spec: .init()))
        try "spec: [unclosed\n".write(toFile: store.path(.backup, "bad"), atomically: true, encoding: .utf8)
        let listed = try await store.list(CheClusterBackup.self)
        #expect(listed.map(\.metadata.name) == ["good"])
    }
}

/// The pieces of workspace backups that need no cluster.
@Suite struct WorkspacePieceTests {
    @Test func partNamesRoundTrip() {
        let claim = WorkspaceClaim(namespace: "alice-che", name: "claim-devworkspace")
        #expect(claim.part == "workspaces/alice-che/claim-devworkspace")
        #expect(WorkspaceClaim(part: claim.part) == claim)
        for bad in ["files/che-data", "workspaces/alice-che", "workspaces//x", "workspaces/a/b/c", "workspaces/a/", "che/workspace-claims"] {
            #expect(WorkspaceClaim(part: bad) == nil, "\(bad)")
        }
    }

    @Test func forEachRunsAtMostTheLimitAtOnceAndKeepsTheOrder() async throws {
        let running = Locked((now: 0, most: 0))
        let results = try await Job.forEach(Array(0..<20), atMost: 3) { i -> Int in
            running.withLock { $0.now += 1; $0.most = max($0.most, $0.now) }
            try await Task.sleep(for: .milliseconds(Int.random(in: 1...20)))
            running.withLock { $0.now -= 1 }
            return i * i
        }
        #expect(results == (0..<20).map { $0 * $0 })
        #expect(running.value.most == 3)
        struct Boom: Error {}
        await #expect(throws: Boom.self) {
            _ = try await Job.forEach(Array(0..<10), atMost: 2) { i -> Int in
                if i == 4 { throw Boom() }
                return i
            }
        }
        #expect(try await Job.forEach([Int](), atMost: 4) { $0 }.isEmpty)
    }
}
