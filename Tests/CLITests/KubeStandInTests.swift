import Foundation
import Testing
import TestSupport

/// The Kubernetes API server stand-in checked with the real kubectl (tests/kube/test_apiserver.sh):
/// apply, get -o yaml, wait --for=jsonpath, scale, patch --subresource=status, selectors, a stale
/// resourceVersion's 409, a compacted watch's 410, bookmarks, a restart with its state file.
@Suite struct KubeStandInTests {
    @Test(.enabled(if: which("kubectl") != nil))
    func theStandInBehavesForKubectl() async throws {
        let script = KubeAPIServer.repoRoot + "/tests/kube/test_apiserver.sh"
        // Output into a file and a wait for the script's exit only: its server runs in the background.
        let result = try await runDetachedAsync("/bin/bash", [script])
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        let summary = result.stdout.split(separator: "\n").last.map(String.init) ?? ""
        #expect(summary.hasPrefix("PASS: ") && !result.stdout.contains("not ok"), "\(summary)")
    }
}
