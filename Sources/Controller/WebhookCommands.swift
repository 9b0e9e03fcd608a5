import AdmissionWebhook
import ArgumentParser
import Foundation
import Logging
import Storage

/// The options both injection commands share: what the injected container looks like.
struct InjectionOptions: ParsableArguments {
    @Option(help: "The image of the injected agent container.") var agentImage = "quay.io/example/chebackup:0.1.0"
    @Option(help: "Its imagePullPolicy.") var imagePullPolicy = "IfNotPresent"
    @Option(help: "The Secret with the agents' token (key token).") var tokenSecret = "che-backup-agent-token"

    var injector: SidecarInjector {
        var settings = InjectionSettings(agentImage: agentImage)
        settings.imagePullPolicy = imagePullPolicy
        settings.tokenSecret = tokenSecret
        return SidecarInjector(settings: settings)
    }

    func validate() throws {
        if agentImage.isEmpty || agentImage.contains(where: \.isWhitespace) { throw ValidationError("--agent-image must be an image reference") }
        if !["Always", "IfNotPresent", "Never"].contains(imagePullPolicy) { throw ValidationError("--image-pull-policy must be Always, IfNotPresent or Never") }
    }
}

struct WebhookCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webhook",
        abstract: "Serve the mutating admission webhook that injects the agent sidecar into labelled pods (POST /inject).")

    @Option(help: "Address to listen on, HOST:PORT (:PORT for all addresses).") var listen = ":8443"
    @Option(help: "TLS certificate (PEM), read again when it changes.") var tlsCert: String
    @Option(help: "TLS private key (PEM).") var tlsKey: String
    @OptionGroup var injection: InjectionOptions
    @Flag(name: .shortAndLong, help: "Log every review.") var verbose = false

    func validate() throws {
        guard (try? HostPort(listen, allowZero: true)) != nil else { throw ValidationError("--listen must be HOST:PORT or :PORT") }
    }

    func run() async throws {
        let logger = makeLogger(verbose ? .info : .notice, label: "chebackup-webhook")
        let address = try HostPort(listen, allowZero: true)
        let host = address.host.isEmpty ? "0.0.0.0" : address.host
        let server = WebhookServer(host: host, port: address.port, certificateFile: tlsCert, keyFile: tlsKey,
                                   handler: AdmissionReviewHandler(injector: injection.injector, logger: logger), logger: logger)
        do {
            try await server.run { port in
                FileHandle.standardError.write(Data("chebackup webhook: serving /inject on \(host):\(port)\n".utf8))
            }
        } catch {
            FileHandle.standardError.write(Data("chebackup webhook: error: \(error)\n".utf8))
            throw ExitCode.failure
        }
    }
}

struct InjectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inject",
        abstract: "Write the agent sidecar into Deployment, StatefulSet and Pod manifests (to stdout) whose pods ask for it.",
        discussion: """
        The same change the webhook makes at admission time, for manifests kept in Git: pods (templates) \
        labelled chebackup.eclipse.org/inject=postgres|files get the agent container, with the annotations \
        chebackup.eclipse.org/dirs or chebackup.eclipse.org/postgres-secret. Other documents pass through.
        """)

    @Option(name: .shortAndLong, help: "The manifest file (- for stdin).") var filename: String
    @OptionGroup var injection: InjectionOptions

    func run() throws {
        let data: Data
        do {
            data = filename == "-" ? FileHandle.standardInput.readDataToEndOfFile() : try Data(contentsOf: URL(fileURLWithPath: filename))
        } catch {
            FileHandle.standardError.write(Data("chebackup inject: cannot read \(filename): \((error as NSError).localizedDescription)\n".utf8))
            throw ExitCode.failure
        }
        do {
            guard let text = String(data: data, encoding: .utf8) else { throw InjectionError("\(filename) is not UTF-8 text") }
            let result = try ManifestInjector(injector: injection.injector).inject(yaml: text)
            for warning in result.warnings { FileHandle.standardError.write(Data("chebackup inject: warning: \(warning)\n".utf8)) }
            for note in result.notes { FileHandle.standardError.write(Data("chebackup inject: \(note)\n".utf8)) }
            FileHandle.standardOutput.write(Data(result.yaml.utf8))
        } catch {
            FileHandle.standardError.write(Data("chebackup inject: error: \(error)\n".utf8))
            throw ExitCode.failure
        }
    }
}
