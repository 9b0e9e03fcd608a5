import Foundation
@testable import KubernetesAPI
import Testing

@Suite struct JSONTests {
    @Test func literalsAndAccessors() {
        let value: JSON = ["s": "text", "i": 42, "d": 1.5, "b": true, "n": nil, "a": [1, "two"], "o": ["k": "v"]]
        #expect(value["s"]?.string == "text")
        #expect(value["i"]?.int == 42)
        #expect(value["i"]?.double == 42)
        #expect(value["d"]?.double == 1.5)
        #expect(value["d"]?.int == nil)
        #expect(value["b"]?.bool == true)
        #expect(value["n"]?.isNull == true)
        #expect(value["a"]?.array?.count == 2)
        #expect(value["a"]?[1]?.string == "two")
        #expect(value["a"]?[5] == nil)
        #expect(value["o"]?.object == ["k": "v"])
        #expect(value["missing"] == nil)
        #expect(value["s"]?.int == nil)
        #expect(value["s"]?["x"] == nil)  // members of a non-object
        #expect(JSON.double(3.0).int == 3)
    }

    @Test func pathSubscriptReadsCreatesAndRemoves() {
        var object: JSON = ["metadata": ["name": "a", "labels": ["x": "1"]]]
        #expect(object[path: "metadata", "name"] == "a")
        #expect(object.name == "a")
        #expect(object[path: "metadata", "nothing", "deeper"] == nil)
        object[path: "status", "phase"] = "Done"  // creates status
        #expect(object["status"] == ["phase": "Done"])
        object[path: "metadata", "labels", "x"] = nil
        #expect(object[path: "metadata", "labels"] == .object([:]))
        #expect(object[path: "metadata", "name"] == "a")  // siblings kept
        var scalar: JSON = 5
        scalar["k"] = "v"  // setting a member turns a non-object into an object
        #expect(scalar == ["k": "v"])
    }

    @Test func roundTripKeepsTypesAndUnknownFields() throws {
        let text = #"{"a":1,"b":1.5,"c":true,"d":null,"e":"x/y","f":[1,"2",{"g":false}],"big":9223372036854775807,"neg":-3}"#
        let value = try JSON(data: Data(text.utf8))
        #expect(value["a"] == .int(1))
        #expect(value["b"] == .double(1.5))
        #expect(value["c"] == .bool(true))
        #expect(value["d"] == .null)
        #expect(value["big"] == .int(Int64.max))
        #expect(value["neg"] == .int(-3))
        let again = try JSON(data: try value.data(sorted: true))
        #expect(again == value)
        #expect(String(decoding: try value.data(sorted: true), as: UTF8.self).hasPrefix(#"{"a":1,"b":1.5,"big":"#))
        #expect(value.description.contains(#""e":"x/y""#))  // slashes not escaped
    }

    @Test func booleansAndNumbersStayApart() throws {
        let value = try JSON(data: Data("[1, true, 0, false, 2.5e300, 18446744073709551616]".utf8))
        #expect(value[0] == .int(1))
        #expect(value[1] == .bool(true))
        #expect(value[2] == .int(0))
        #expect(value[3] == .bool(false))
        #expect(value[4] == .double(2.5e300))
        #expect(value[5]?.double != nil)  // beyond Int64: a double, not an error
    }

    struct Meta: Codable, Equatable {
        var name: String
        var replicas: Int?
    }

    @Test func typedModelsEncodeAndDecode() throws {
        let json = try JSON(encoding: Meta(name: "x", replicas: 3))
        #expect(json == ["name": "x", "replicas": 3])
        #expect(try json.decode(Meta.self) == Meta(name: "x", replicas: 3))
    }

    @Test func badInputIsAnInvalidError() throws {
        for text in ["{", "", "{\"a\" 1}", "nul", "[1 2]"] {
            let error = #expect(throws: KubeError.self) { try JSON(data: Data(text.utf8)) }
            #expect(error?.code == .invalid)
            #expect(error?.message.contains("not valid JSON") == true)
        }
        let wrong: JSON = ["name": 5]
        let error = #expect(throws: KubeError.self) { try wrong.decode(Meta.self) }
        #expect(error?.code == .invalid)
        #expect(error?.message.contains("name") == true)
        let nan = #expect(throws: KubeError.self) { try JSON.double(.nan).data() }
        #expect(nan?.code == .invalid)
    }
}

@Suite struct KubeErrorTests {
    func status(_ code: Int, _ reason: String, _ message: String) -> Data {
        Data(#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"\#(message)","reason":"\#(reason)","code":\#(code)}"#.utf8)
    }

    @Test func decodesStatusBodies() {
        let notFound = KubeError.http(status: 404, body: status(404, "NotFound", #"secrets \"x\" not found"#), context: "get secrets che/x")
        #expect(notFound.code == .notFound)
        #expect(notFound.status == 404)
        #expect(notFound.reason == "NotFound")
        #expect(notFound.message == #"get secrets che/x: secrets "x" not found (HTTP 404)"#)

        #expect(KubeError.http(status: 409, body: status(409, "AlreadyExists", "exists"), context: "c").code == .alreadyExists)
        #expect(KubeError.http(status: 409, body: status(409, "Conflict", "modified"), context: "c").code == .conflict)
        #expect(KubeError.http(status: 410, body: status(410, "Expired", "too old"), context: "c").code == .gone)
        #expect(KubeError.http(status: 403, body: status(403, "Forbidden", "no"), context: "c").code == .forbidden)
        #expect(KubeError.http(status: 422, body: status(422, "Invalid", "bad name"), context: "c").code == .invalid)
        #expect(KubeError.http(status: 400, body: status(400, "BadRequest", "bad"), context: "c").code == .invalid)
        #expect(KubeError.http(status: 429, body: status(429, "TooManyRequests", "slow"), context: "c").code == .transient)
        #expect(KubeError.http(status: 503, body: Data(), context: "c").code == .transient)
        #expect(KubeError.http(status: 418, body: Data(), context: "c").code == .other)
    }

    @Test func unauthorizedHasAFixedMessage() {
        let error = KubeError.http(status: 401, body: status(401, "Unauthorized", "Unauthorized"), context: "get pods")
        #expect(error.code == .unauthorized)
        #expect(error.message == "get pods: the API server refused the credentials (401 Unauthorized)")
    }

    @Test func bodiesThatAreNoStatus() {
        let html = KubeError.http(status: 502, body: Data("<html>Bad gateway</html>\nmore\n".utf8), context: "list pods")
        #expect(html.code == .transient)
        #expect(html.message == "list pods: <html>Bad gateway</html> (HTTP 502)")
        #expect(html.reason.isEmpty)
        let empty = KubeError.http(status: 500, body: Data(), context: "get x")
        #expect(empty.message == "get x: HTTP 500 Internal Server Error")
        let notStatus = KubeError.http(status: 404, body: Data(#"{"kind":"Pod"}"#.utf8), context: "get x")
        #expect(notStatus.code == .notFound)
        #expect(!notStatus.message.contains("\n"))
    }

    @Test func redactsAnEchoedSecret() {
        let error = KubeError(.other, "server said: Bearer s3cr3t-token is bad").redacting("s3cr3t-token")
        #expect(!error.message.contains("s3cr3t-token"))
        #expect(error.message.contains("<redacted>"))
    }
}

@Suite struct KubeResourceTests {
    @Test func paths() {
        #expect(KubeResource.secrets.path(namespace: "che", name: "a") == "/api/v1/namespaces/che/secrets/a")
        #expect(KubeResource.secrets.path(namespace: nil) == "/api/v1/secrets")
        #expect(KubeResource.secrets.path(namespace: KubeClient.allNamespaces) == "/api/v1/secrets")
        #expect(KubeResource.namespaces.path(namespace: "ignored", name: "che") == "/api/v1/namespaces/che")
        #expect(KubeResource.deployments.path(namespace: "che", name: "d", subresource: "scale")
            == "/apis/apps/v1/namespaces/che/deployments/d/scale")
        #expect(KubeResource.clusterBackups.path(namespace: "che", name: "b", subresource: "status")
            == "/apis/org.eclipse.che/v1/namespaces/che/checlusterbackups/b/status")
        #expect(KubeResource.mutatingWebhookConfigurations.path(namespace: "che")
            == "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations")
        #expect(KubeResource.cheClusters.apiVersion == "org.eclipse.che/v2")
        #expect(KubeResource.pods.apiVersion == "v1")
        #expect(KubeResource.leases.description == "leases.coordination.k8s.io")
    }

    @Test func namesCannotEscapeTheirSegment() {
        #expect(KubeResource.secrets.path(namespace: "che", name: "../../x") == "/api/v1/namespaces/che/secrets/..%2F..%2Fx")
        #expect(KubeResource.secrets.path(namespace: "a b", name: "é?") == "/api/v1/namespaces/a%20b/secrets/%C3%A9%3F")
    }
}

@Suite struct LeaseFormatTests {
    @Test func microTime() {
        let text = LeaderElection.microTime(Date(timeIntervalSince1970: 1_700_000_000.123456))
        #expect(text.hasPrefix("2023-11-14T22:13:20.12345"))
        #expect(text.count == "2023-11-14T22:13:20.123456Z".count)
        #expect(text.hasSuffix("Z"))
        #expect(LeaderElection.microTime(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00.000000Z")
    }

    @Test func leaseSecondsRoundUp() {
        #expect(LeaderElection.seconds(.seconds(15)) == 15)
        #expect(LeaderElection.seconds(.milliseconds(1500)) == 2)
        #expect(LeaderElection.seconds(.milliseconds(10)) == 1)
    }
}
