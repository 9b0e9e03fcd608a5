import Foundation
import Testing
import TestSupport

/// manifests/: every example resource validates against its CRD's schema (and every invalid one
/// is refused), the CRDs match the controller's resource types, and kustomize renders both
/// kustomizations. The checks live in tests/manifests/validate.py.
@Suite struct ManifestsTests {
    @Test(.enabled(if: which("python3") != nil))
    func examplesValidateAgainstTheirCRDs() async throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let result = try await runAsync(which("python3")!, [root + "/tests/manifests/validate.py"])
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        let summary = result.stdout.split(separator: "\n").last.map(String.init) ?? ""
        #expect(summary.hasSuffix(" passed, 0 failed"), "\(summary)")
        #expect(result.stdout.contains("FAIL") == false)
        #expect(result.stdout.contains("two-backends") || result.stdout.contains("two"), "the one-backend rule is checked")
    }
}
