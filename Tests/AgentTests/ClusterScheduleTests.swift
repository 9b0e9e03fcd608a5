import Foundation
import KubernetesAPI
import Testing
import TestSupport

extension ClusterSuites {
    /// A CheClusterBackupSchedule in Kubernetes mode: the leader creates the due CheClusterBackup,
    /// runs it, applies the retention and writes the schedule's status through `/status`.
    @Suite(.serialized) struct ClusterScheduleTests {
        @Test func aScheduleBacksUpAndAppliesItsRetentionThroughTheAPI() async throws {
            let c = try await ClusterFixture()
            try c.startController("a")
            try await c.api.apply(c.backupYAML("manual"))
            let manual = try await c.waitForState("checlusterbackup", "manual")
            #expect(manual["state"] as? String == "Succeeded", "\(manual)\n\(c.controllerLog("a"))")
            try await c.api.apply("""
                apiVersion: org.eclipse.che/v1
                kind: CheClusterBackupSchedule
                metadata: {name: every-minute}
                spec:
                  schedule: "* * * * *"
                  backupServerConfigRef: rest-server
                  retention: {keepLast: 1}
                """)
            // At most a minute for the due time and 15 s for the controller's next look.
            let deadline = Date().addingTimeInterval(180)
            var status: [String: Any] = [:]
            while Date() < deadline {
                status = try await c.api.get(["checlusterbackupschedule", "every-minute"])?["status"] as? [String: Any] ?? [:]
                let conditions = status["conditions"] as? [[String: Any]] ?? []
                if conditions.contains(where: { $0["type"] as? String == "Retention" }) { break }
                try await Task.sleep(for: .seconds(1))
            }
            let conditions = status["conditions"] as? [[String: Any]] ?? []
            let retention = conditions.first { $0["type"] as? String == "Retention" }
            #expect(retention?["status"] as? String == "True", "\(status)\n\(c.controllerLog("a"))")
            #expect((retention?["message"] as? String)?.contains("kept 1, removed 1") == true, "\(status)")
            #expect(status["lastSnapshotId"] is String && status["nextScheduleTime"] is String)
            #expect(try await c.snapshotCount() == 1)
            let writes = try await c.api.requests().filter { ($0["path"]?.string ?? "").contains("checlusterbackupschedules/every-minute") && $0["method"]?.string != "GET" }
            #expect(!writes.isEmpty && writes.allSatisfy { ($0["path"]?.string ?? "").hasSuffix("/status") }, "\(writes)")
            let made = try await c.client.list(.clusterBackups, labelSelector: "chebackup.eclipse.org/schedule=every-minute").items
            #expect(made.count == 1 && made.first?[path: "status", "state"]?.string == "Succeeded")
            #expect(try await c.eventReasons("every-minute").contains("BackupCreated"))
        }
    }
}
