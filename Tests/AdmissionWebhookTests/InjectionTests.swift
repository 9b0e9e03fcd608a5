import AdmissionWebhook
import Foundation
import KubernetesAPI
import Logging
import Testing
import TestSupport

/// The webhook's answers to real AdmissionReviews (the pods of Che's postgres and che server
/// Deployments, tests/webhook/), every patch applied by the real `kubectl patch --local`.
@Suite struct InjectionTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    static let handler = AdmissionReviewHandler(injector: SidecarInjector(settings: InjectionSettings(agentImage: "registry.example/chebackup:1.2")),
                                                logger: Logger(label: "test"))

    /// The pod the ReplicaSet controller would create from a Deployment of tests/webhook/.
    static func pod(fromDeployment file: String) throws -> JSON {
        let text = try String(contentsOfFile: root + "/tests/webhook/" + file, encoding: .utf8)
        let deployment = try #require(try ManifestInjector.documents(yaml: text).first { $0["kind"]?.string == "Deployment" })
        var pod = try #require(deployment[path: "spec", "template"])
        pod["apiVersion"] = "v1"
        pod["kind"] = "Pod"
        pod[path: "metadata", "generateName"] = .string((deployment[path: "metadata", "name"]?.string ?? "") + "-5d4f8b7c9-")
        pod[path: "metadata", "namespace"] = "eclipse-che"
        return pod
    }

    static func review(_ pod: JSON, uid: String = "7b0e6c1a-3f2d-4c55-9a0e-1d2c3b4a5f60", operation: String = "CREATE") -> JSON {
        ["apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
         "request": ["uid": .string(uid), "kind": ["group": "", "version": "v1", "kind": "Pod"],
                     "resource": ["group": "", "version": "v1", "resource": "pods"], "namespace": "eclipse-che",
                     "operation": .string(operation), "userInfo": ["username": "system:serviceaccount:kube-system:replicaset-controller"],
                     "object": pod, "dryRun": false]]
    }

    /// The response member of the handler's answer (status 200 required).
    static func respond(_ review: JSON) throws -> JSON {
        let answer = handler.answer(try review.data())
        #expect(answer.status == 200, "\(String(decoding: answer.body, as: UTF8.self))")
        let document = try JSON(data: answer.body)
        #expect(document["apiVersion"]?.string == "admission.k8s.io/v1")
        #expect(document["kind"]?.string == "AdmissionReview")
        return try #require(document["response"])
    }

    /// The patch of a response, applied to `pod` by the real kubectl.
    static func kubectlApply(_ response: JSON, to pod: JSON) async throws -> JSON {
        #expect(response["patchType"]?.string == "JSONPatch")
        let encoded = try #require(response["patch"]?.string)
        let patch = try #require(Data(base64Encoded: encoded))
        let dir = TempDir("chebackup-inject")
        defer { dir.remove() }
        try pod.data(sorted: true).write(to: URL(fileURLWithPath: dir.file("pod.json")))
        let kubectl = try #require(which("kubectl"))
        let result = try await runAsync(kubectl, ["patch", "--local", "-f", dir.file("pod.json"), "--type=json",
                                                  "-p", String(decoding: patch, as: UTF8.self), "-o", "json"],
                                        environment: ["KUBECONFIG": dir.file("none")])
        #expect(result.status == 0, "kubectl: \(result.stderr)")
        return try JSON(data: result.stdoutData)
    }

    static func containers(_ pod: JSON) -> [JSON] { pod[path: "spec", "containers"]?.array ?? [] }
    static func container(_ pod: JSON, _ name: String) -> JSON? { containers(pod).first { $0["name"]?.string == name } }
    static func names(_ list: JSON?) -> [String] { (list?.array ?? []).compactMap { $0["name"]?.string } }

    static func expectUniqueNames(_ pod: JSON) {
        let containerNames = names(pod[path: "spec", "containers"]) + names(pod[path: "spec", "initContainers"])
        #expect(Set(containerNames).count == containerNames.count, "container names collide: \(containerNames)")
        let volumeNames = names(pod[path: "spec", "volumes"])
        #expect(Set(volumeNames).count == volumeNames.count, "volume names collide: \(volumeNames)")
        let ports = containers(pod).flatMap { $0["ports"]?.array ?? [] }.compactMap { $0["containerPort"]?.int }
        #expect(Set(ports).count == ports.count, "ports collide: \(ports)")
    }

    @Test(.enabled(if: which("kubectl") != nil))
    func chePostgresPodGetsAPostgresAgent() async throws {
        let pod = try Self.pod(fromDeployment: "che-postgres.yaml")
        let response = try Self.respond(Self.review(pod))
        #expect(response["uid"]?.string == "7b0e6c1a-3f2d-4c55-9a0e-1d2c3b4a5f60")
        #expect(response["allowed"]?.bool == true)
        #expect(response["warnings"] == nil)
        let patched = try await Self.kubectlApply(response, to: pod)

        let agent = try #require(Self.container(patched, "chebackup-agent"))
        #expect(agent["image"]?.string == "registry.example/chebackup:1.2")
        #expect(agent["command"] == ["chebackup-agent", "--role", "postgres", "--listen", "0.0.0.0:7001", "--token-file", "/etc/chebackup-agent/token"])
        #expect(agent["ports"] == [["name": "chebackup-agent", "containerPort": 7001, "protocol": "TCP"]])
        let env = Dictionary(uniqueKeysWithValues: (agent["env"]?.array ?? []).map { ($0["name"]?.string ?? "", $0) })
        #expect(env["PGHOST"]?["value"]?.string == "127.0.0.1")
        #expect(env["PGPORT"]?["value"]?.string == "5432")
        #expect(env["PGUSER"]?[path: "valueFrom", "secretKeyRef"] == ["name": "postgres-credentials", "key": "user"])
        #expect(env["PGPASSWORD"]?[path: "valueFrom", "secretKeyRef"] == ["name": "postgres-credentials", "key": "password"])
        #expect(agent["volumeMounts"] == [["name": "chebackup-agent-token", "mountPath": "/etc/chebackup-agent", "readOnly": true]])
        let security = try #require(agent["securityContext"])
        #expect(security["allowPrivilegeEscalation"]?.bool == false)
        #expect(security["runAsNonRoot"]?.bool == true)
        #expect(security[path: "capabilities", "drop"] == ["ALL"])
        #expect(security[path: "seccompProfile", "type"]?.string == "RuntimeDefault")
        #expect(agent[path: "resources", "limits", "memory"]?.string == "512Mi")

        let volume = try #require(patched[path: "spec", "volumes"]?.array?.first { $0["name"]?.string == "chebackup-agent-token" })
        #expect(volume["secret"] == ["secretName": "che-backup-agent-token", "defaultMode": 288, "items": [["key": "token", "path": "token"]]])
        #expect(patched[path: "metadata", "labels", "chebackup.eclipse.org/agent"]?.string == "postgres")
        #expect(patched[path: "metadata", "annotations", "chebackup.eclipse.org/injected"]?.string == "chebackup-agent")
        // The pod's own containers, volumes, labels and annotations are as they were.
        #expect(Self.container(patched, "postgres") == Self.container(pod, "postgres"))
        #expect(patched[path: "metadata", "labels", "component"]?.string == "postgres")
        #expect(patched[path: "metadata", "annotations", "che.eclipse.org/checksum"]?.string == "0440")
        #expect(Self.names(patched[path: "spec", "volumes"]) == ["postgres-data", "chebackup-agent-token"])
        Self.expectUniqueNames(patched)
    }

    @Test(.enabled(if: which("kubectl") != nil))
    func cheServerPodGetsAFilesAgentWithItsDataVolume() async throws {
        let pod = try Self.pod(fromDeployment: "che-server.yaml")
        let response = try Self.respond(Self.review(pod))
        let patched = try await Self.kubectlApply(response, to: pod)
        let agent = try #require(Self.container(patched, "chebackup-agent"))
        #expect(agent["command"] == ["chebackup-agent", "--role", "files", "--listen", "0.0.0.0:7002", "--token-file", "/etc/chebackup-agent/token",
                                     "--dir", "che-data=/home/user/che"])
        #expect(agent["volumeMounts"] == [["name": "chebackup-agent-token", "mountPath": "/etc/chebackup-agent", "readOnly": true],
                                          ["name": "che-data", "mountPath": "/home/user/che"]])
        #expect(agent["env"] == nil)
        // The agent reads and restores Che's files as Che's user.
        #expect(agent[path: "securityContext", "runAsUser"]?.int == 1724)
        #expect(patched[path: "metadata", "labels", "chebackup.eclipse.org/agent"]?.string == "files")
        #expect(Self.container(patched, "che") == Self.container(pod, "che"))
        Self.expectUniqueNames(patched)
    }

    @Test(.enabled(if: which("kubectl") != nil))
    func injectingTwiceChangesNothing() async throws {
        for file in ["che-postgres.yaml", "che-server.yaml"] {
            let pod = try Self.pod(fromDeployment: file)
            let once = try await Self.kubectlApply(try Self.respond(Self.review(pod)), to: pod)
            let again = try Self.respond(Self.review(once))
            #expect(again["allowed"]?.bool == true)
            #expect(again["patch"] == nil && again["patchType"] == nil, "\(file): a second injection patched again")
            #expect(again["warnings"] == nil)
            // So does a pod whose agent came from the old kustomize component (no annotation).
            var manual = once
            manual[path: "metadata", "annotations"] = [:]
            #expect(try Self.respond(Self.review(manual))["patch"] == nil)
        }
    }

    @Test(.enabled(if: which("kubectl") != nil))
    func namesAndPortsNeverCollideWithThePods() async throws {
        var pod = try Self.pod(fromDeployment: "che-postgres.yaml")
        var containers = Self.containers(pod)
        containers.append(["name": "chebackup-agent", "image": "other/thing", "ports": [["containerPort": 7001], ["containerPort": 7002]]])
        containers.append(["name": "chebackup-agent-2", "image": "other/thing"])
        pod[path: "spec", "containers"] = .array(containers)
        pod[path: "spec", "initContainers"] = [["name": "chebackup-agent-3", "image": "init"]]
        pod[path: "spec", "volumes"] = .array((pod[path: "spec", "volumes"]?.array ?? []) + [["name": "chebackup-agent-token", "emptyDir": [:]]])
        pod["metadata"] = ["generateName": "postgres-", "labels": ["chebackup.eclipse.org/inject": "postgres"],
                           "annotations": ["chebackup.eclipse.org/postgres-secret": "pg-superuser"]]
        let patched = try await Self.kubectlApply(try Self.respond(Self.review(pod)), to: pod)
        let agent = try #require(Self.container(patched, "chebackup-agent-4"))
        #expect(agent["ports"]?[0]?["containerPort"]?.int == 7003)
        #expect(agent["volumeMounts"]?[0]?["name"]?.string == "chebackup-agent-token-2")
        #expect(patched[path: "metadata", "annotations", "chebackup.eclipse.org/injected"]?.string == "chebackup-agent-4")
        Self.expectUniqueNames(patched)

        // A pod with no labels, annotations or volumes at all: the objects are created.
        let bare: JSON = ["apiVersion": "v1", "kind": "Pod",
                          "metadata": ["generateName": "pg-", "labels": ["chebackup.eclipse.org/inject": "postgres"],
                                       "annotations": ["chebackup.eclipse.org/postgres-secret": "pg"]],
                          "spec": ["containers": [["name": "db", "image": "postgres:15"]]]]
        let bareDone = try await Self.kubectlApply(try Self.respond(Self.review(bare)), to: bare)
        #expect(Self.names(bareDone[path: "spec", "volumes"]) == ["chebackup-agent-token"])
        #expect(bareDone[path: "metadata", "labels"] == ["chebackup.eclipse.org/inject": "postgres", "chebackup.eclipse.org/agent": "postgres"])
    }

    @Test func podsThatDoNotAskAreAdmittedUntouched() throws {
        var pod = try Self.pod(fromDeployment: "che-server.yaml")
        pod[path: "metadata", "labels", "chebackup.eclipse.org/inject"] = nil
        let response = try Self.respond(Self.review(pod))
        #expect(response["allowed"]?.bool == true)
        #expect(response["patch"] == nil && response["patchType"] == nil && response["warnings"] == nil)
        // Nor are updates, other kinds and subresources touched.
        let labelled = try Self.pod(fromDeployment: "che-server.yaml")
        #expect(try Self.respond(Self.review(labelled, operation: "UPDATE"))["patch"] == nil)
        var other = Self.review(labelled)
        other[path: "request", "kind"] = ["group": "apps", "version": "v1", "kind": "Deployment"]
        #expect(try Self.respond(other)["patch"] == nil)
    }

    /// Each bad annotation or label: admitted untouched, with a warning naming the problem.
    @Test(arguments: [
        ("files", ["chebackup.eclipse.org/dirs": "che-data=/home/user/elsewhere"], "/home/user/elsewhere"),
        ("files", ["chebackup.eclipse.org/dirs": "che-data:/home/user/che"], "NAME=PATH"),
        ("files", ["chebackup.eclipse.org/dirs": "Che Data=/home/user/che"], "is not a name"),
        ("files", ["chebackup.eclipse.org/dirs": "che-data=home/user/che"], "must be absolute"),
        ("files", ["chebackup.eclipse.org/dirs": "che-data=/home/user/../../etc"], "must be absolute"),
        ("files", ["chebackup.eclipse.org/dirs": "a=/home/user/che,a=/public-certs"], "twice"),
        ("files", ["chebackup.eclipse.org/dirs": ""], "NAME=PATH"),
        ("files", [:], "needs the annotation chebackup.eclipse.org/dirs"),
        ("postgres", [:], "needs the annotation chebackup.eclipse.org/postgres-secret"),
        ("postgres", ["chebackup.eclipse.org/postgres-secret": "Bad_Name;rm -rf"], "must name a Secret"),
        ("database", [:], "must be postgres or files"),
    ] as [(String, [String: String], String)])
    func badAnnotationsAreAdmittedUntouchedWithAWarning(role: String, annotations: [String: String], expected: String) throws {
        var pod = try Self.pod(fromDeployment: "che-server.yaml")
        pod[path: "metadata", "labels", "chebackup.eclipse.org/inject"] = .string(role)
        pod[path: "metadata", "annotations"] = .object(annotations.mapValues { .string($0) })
        let response = try Self.respond(Self.review(pod))
        #expect(response["allowed"]?.bool == true)
        #expect(response["patch"] == nil && response["patchType"] == nil)
        let warnings = response["warnings"]?.array?.compactMap(\.string) ?? []
        #expect(warnings.count == 1)
        #expect(warnings.first?.contains(expected) == true, "\(warnings)")
        #expect(warnings.first?.contains("\n") == false)
    }

    @Test func aFilesAgentForFilesOwnedByRootIsRefused() throws {
        var pod = try Self.pod(fromDeployment: "che-server.yaml")
        pod[path: "spec", "securityContext", "runAsUser"] = 0
        let warnings = try Self.respond(Self.review(pod))["warnings"]?.array?.compactMap(\.string) ?? []
        #expect(warnings.first?.contains("runs as root") == true, "\(warnings)")
    }

    @Test(arguments: [
        ("not json at all", "not JSON"),
        (#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"1"}}"#, "admission.k8s.io/v1 AdmissionReview"),
        (#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#, "no request"),
        (#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"kind":{"kind":"Pod"}}}"#, "no uid"),
        (#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","kind":{"group":"","kind":"Pod"},"operation":"CREATE"}}"#, "no object"),
        (#"[1,2,3]"#, "admission.k8s.io/v1 AdmissionReview"),
    ])
    func malformedReviewsGet400(body: String, expected: String) {
        let answer = Self.handler.answer(Data(body.utf8))
        #expect(answer.status == 400)
        let text = String(decoding: answer.body, as: UTF8.self)
        #expect(text.contains(expected), "\(text)")
        #expect(text.split(separator: "\n").count == 1)
    }

    /// `inject -f`'s change is the webhook's: the same operations under the pod template give
    /// what kubectl gives for the pod.
    @Test(.enabled(if: which("kubectl") != nil))
    func manifestInjectionMatchesTheWebhook() async throws {
        let injector = Self.handler.injector
        for file in ["che-postgres.yaml", "che-server.yaml"] {
            let text = try String(contentsOfFile: Self.root + "/tests/webhook/" + file, encoding: .utf8)
            let result = try ManifestInjector(injector: injector).inject(yaml: text)
            #expect(result.warnings.isEmpty)
            let documents = try ManifestInjector.documents(yaml: result.yaml)
            #expect(documents.count == (try ManifestInjector.documents(yaml: text)).count)
            let deployment = try #require(documents.first { $0["kind"]?.string == "Deployment" })
            let pod = try Self.pod(fromDeployment: file)
            let viaWebhook = try await Self.kubectlApply(try Self.respond(Self.review(pod)), to: pod)
            #expect(deployment[path: "spec", "template", "spec"] == viaWebhook["spec"])
            #expect(deployment[path: "spec", "template", "metadata", "labels"] == viaWebhook[path: "metadata", "labels"])
            // Quoted numbers stay strings, other documents pass through.
            if file == "che-postgres.yaml" {
                #expect(deployment[path: "spec", "template", "metadata", "annotations", "che.eclipse.org/checksum"] == "0440")
                #expect(documents.contains { $0["kind"]?.string == "Service" })
            }
            // Injecting the result again changes nothing.
            let again = try ManifestInjector(injector: injector).inject(yaml: result.yaml)
            #expect(again.yaml == result.yaml)
            #expect(again.notes.allSatisfy { $0.contains("already there") })
        }
        #expect(throws: InjectionError.self) { try ManifestInjector(injector: injector).inject(yaml: "a: [1, 2\nb: }") }
    }
}
