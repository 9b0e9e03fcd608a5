import Foundation
import Testing
import TestSupport

/// `chebackup inject -f`, run as a user runs it on the manifests of Che's Deployments: the output
/// is valid for Kubernetes 1.32 (kubernetes-validate --strict), injecting again changes nothing,
/// and bad input is one line on stderr.
@Suite struct InjectCommandTests {
    let bin = builtProduct("chebackup")
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    static let validator = """
        import sys, yaml, kubernetes_validate
        docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
        for d in docs: kubernetes_validate.validate(d, "1.32.0", strict=True)
        print(len(docs))
        """

    static var canValidate: Bool {
        guard let python = which("python3") else { return false }
        return (try? run(python, ["-c", "import yaml, kubernetes_validate"]))?.status == 0
    }

    @Test(.enabled(if: canValidate))
    func injectedManifestsAreValidAndStable() async throws {
        let dir = TempDir("chebackup-inject-cli")
        defer { dir.remove() }
        let input = dir.file("che.yaml")
        let text = try String(contentsOfFile: Self.root + "/tests/webhook/che-postgres.yaml", encoding: .utf8) + "---\n"
            + (try String(contentsOfFile: Self.root + "/tests/webhook/che-server.yaml", encoding: .utf8))
        try text.write(toFile: input, atomically: true, encoding: .utf8)

        let once = try await runAsync(bin, ["inject", "-f", input, "--agent-image", "registry.example/chebackup:1.2"])
        #expect(once.status == 0, "\(once.stderr)")
        #expect(once.stderr.contains("Deployment postgres: postgres agent injected as container chebackup-agent"), "\(once.stderr)")
        #expect(once.stderr.contains("Deployment che: files agent injected as container chebackup-agent"), "\(once.stderr)")
        #expect(once.stdout.contains("image: registry.example/chebackup:1.2"))
        #expect(once.stdout.contains("- che-data=/home/user/che"))
        try once.stdout.write(toFile: dir.file("out.yaml"), atomically: true, encoding: .utf8)
        let valid = try await runAsync(try #require(which("python3")), ["-c", Self.validator, dir.file("out.yaml")])
        #expect(valid.status == 0, "\(valid.stderr)")
        #expect(valid.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "3", "Deployment, Service, Deployment")

        // Again, from stdin this time: nothing changes.
        let twice = try await runAsync(bin, ["inject", "-f", "-", "--agent-image", "registry.example/chebackup:1.2"], stdin: once.stdoutData)
        #expect(twice.status == 0)
        #expect(twice.stdout == once.stdout)
        #expect(twice.stderr.contains("agent chebackup-agent already there"))
    }

    @Test func aWorkloadThatCannotGetAnAgentIsLeftAloneWithAWarning() async throws {
        let dir = TempDir("chebackup-inject-cli")
        defer { dir.remove() }
        let text = try String(contentsOfFile: Self.root + "/tests/webhook/che-server.yaml", encoding: .utf8)
            .replacingOccurrences(of: "che-data=/home/user/che", with: "che-data=/nowhere")
        try text.write(toFile: dir.file("che.yaml"), atomically: true, encoding: .utf8)
        let r = try await runAsync(bin, ["inject", "-f", dir.file("che.yaml")])
        #expect(r.status == 0)
        #expect(r.stderr.contains("warning: Deployment che: directory che-data=/nowhere"), "\(r.stderr)")
        #expect(!r.stdout.contains("chebackup-agent"))
    }

    @Test(arguments: [
        (["webhook", "--listen", "nowhere", "--tls-cert", "/c", "--tls-key", "/k"], "--listen must be HOST:PORT"),
        (["webhook", "--listen", "127.0.0.1:0", "--tls-cert", "/nonexistent/tls.crt", "--tls-key", "/nonexistent/tls.key"], "/nonexistent/tls.crt"),
        (["webhook", "--listen", "127.0.0.1:0", "--tls-cert", "/c", "--tls-key", "/k", "--agent-image", ""], "--agent-image must be an image reference"),
        (["inject", "-f", "/nonexistent/che.yaml"], "cannot read /nonexistent/che.yaml"),
        (["inject", "-f", "BAD"], "is not YAML"),
        (["inject", "-f", "-", "--image-pull-policy", "Sometimes"], "--image-pull-policy must be Always, IfNotPresent or Never"),
    ])
    func badInputIsOneLine(arguments: [String], expected: String) async throws {
        let dir = TempDir("chebackup-inject-cli")
        defer { dir.remove() }
        try "kind: Deployment\nspec: [unclosed\n".write(toFile: dir.file("bad.yaml"), atomically: true, encoding: .utf8)
        let r = try await runAsync(bin, arguments.map { $0 == "BAD" ? dir.file("bad.yaml") : $0 }, stdin: Data())
        #expect(r.status != 0)
        #expect(r.stderr.contains(expected), "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").filter { !$0.hasPrefix("Usage") && !$0.contains("--help") && !$0.isEmpty }.count == 1, "\(r.stderr)")
        #expect(r.stdout.isEmpty)
    }
}
