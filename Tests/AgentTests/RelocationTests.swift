import ControllerCore
import Foundation
import LineProtocol
import Repository
import Testing

/// The snapshot's record of its namespace and domain comes from the repository: someone who can
/// write there must not be able to smuggle SQL or YAML through a relocation.
@Suite struct RelocationTests {
    func snapshot(namespace: String, domain: String) throws -> Snapshot {
        let record: [String: Any] = ["version": 1, "time": 0, "hostname": "h", "username": "u", "tags": [String](), "program": "p",
                                     "parts": [Any](), "metadata": ["namespace": namespace, "domain": domain]]
        return try JSONDecoder().decode(Snapshot.self, from: try JSONSerialization.data(withJSONObject: record))
    }

    let here = InstallationInfo(id: "che", namespace: "eclipse-che", domain: "che.example.com", cheVersion: "7.42.0")

    @Test func anHonestRelocationRewritesDomainAndServiceNames() throws {
        let r = try Relocation(snapshot: try snapshot(namespace: "old-ns", domain: "che.old.org"), installation: here, allowed: true)
        #expect(r.rewrites == [Rewrite(from: "che.old.org", to: "che.example.com"), Rewrite(from: "old-ns.svc", to: "eclipse-che.svc")])
    }

    @Test(arguments: [("old-ns", "x$rewrite$; DROP TABLE t; --"), ("a' OR '1'='1", "che.example.com"), ("ns\nkind: Secret", "che.example.com")])
    func aRecordedValueThatIsNotADNSNameIsRefused(namespace: String, domain: String) throws {
        #expect {
            _ = try Relocation(snapshot: try snapshot(namespace: namespace, domain: domain), installation: here, allowed: true)
        } throws: { error in
            "\(error)".contains("is not a host name or namespace")
        }
    }

    @Test func dnsNames() {
        for good in ["che.example.com", "eclipse-che.svc", "a", "xn--bcher-kva.example", "192.168.49.2.nip.io"] {
            #expect(Rewrite.isDNSName(good), "\(good)")
        }
        for bad in ["", "a..b", "-a.b", "a-.b", "a b", "a$b", "a;b", "a'b", String(repeating: "a", count: 64) + ".com",
                    String(repeating: "abcdefgh.", count: 30)] {
            #expect(!Rewrite.isDNSName(bad), "\(bad)")
        }
    }
}
