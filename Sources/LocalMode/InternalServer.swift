import ControllerCore
import Foundation
import Repository
import Storage
import Subprocess

/// The internal backup server in local mode: `chebackup rest-server` started for the command's
/// duration on the configured address, storing in the state directory. Its configuration and
/// Secret (a random repository password, a file of mode 0600) are made on first use.
struct InternalServerProcessHost: InternalServerHost {
    let installation: Installation
    let store: FileResourceStore

    func ensureConfiguration() async throws -> String {
        let name = Engine.internalConfigurationName
        if store.exists(.backupServerConfiguration, name) { return name }
        let address = try HostPort(installation.internalServer.listen, what: "internalServer.listen")
        let meta = ObjectMeta(name: name, namespace: installation.namespace, creationTimestamp: Engine.now())
        if !store.exists(.secret, name) {
            try store.write(Secret(metadata: meta, stringData: ["repo-password": Primitives.random(32).base64EncodedString()]))
        }
        let rest = RestServerSpec(protocol: "http", hostname: address.connectableHost, port: address.port, repositoryPath: "che",
                                  repositoryPasswordSecretRef: name)
        try store.write(CheBackupServerConfiguration(metadata: meta, spec: .init(rest: rest)))
        return name
    }

    func withRunning<T: Sendable>(stage: @escaping @Sendable (String) -> Void, _ body: () async throws -> T) async throws -> T {
        stage("Setting up the internal backup server on \(installation.internalServer.listen)")
        let process = try await start()
        defer {
            process.abort()
            _ = process.waitBlocking()
        }
        return try await body()
    }

    func start() async throws -> Subprocess {
        let address = try HostPort(installation.internalServer.listen, what: "internalServer.listen")
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        try FileManager.default.createDirectory(atPath: installation.internalServerPath, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        let process = try Subprocess(exe, ["rest-server", "--path", installation.internalServerPath, "--listen", address.description],
                                     outputFile: installation.stateDir + "/backup-server.log")
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if address.accepts() { return process }
            if !process.isRunning { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        process.abort()
        throw ControllerError(.store, "the internal backup server did not start on \(address); see \(installation.stateDir)/backup-server.log")
    }
}
