import Foundation
import KubernetesAPI
import Logging

/// Answers `admission.k8s.io/v1` AdmissionReviews for pods: the request's `uid`, `allowed: true`
/// always (backup must never keep Che's pods from starting), and a base64 JSONPatch when an
/// agent is injected. A review that cannot be read gets HTTP 400 with a one-line reason.
public struct AdmissionReviewHandler: Sendable {
    public let injector: SidecarInjector
    let logger: Logger

    public init(injector: SidecarInjector, logger: Logger) {
        self.injector = injector
        self.logger = logger
    }

    public struct Answer: Sendable, Equatable {
        public var status: Int
        public var body: Data
    }

    /// The answer to one POST body.
    public func answer(_ body: Data) -> Answer {
        let review: JSON
        do {
            review = try JSON(data: body)
        } catch {
            return Self.badRequest("the body is not JSON")
        }
        guard review["apiVersion"]?.string == "admission.k8s.io/v1", review["kind"]?.string == "AdmissionReview" else {
            return Self.badRequest("expected an admission.k8s.io/v1 AdmissionReview, got \(review["apiVersion"]?.string ?? "no apiVersion") \(review["kind"]?.string ?? "no kind")")
        }
        guard let members = review["request"]?.object else { return Self.badRequest("the AdmissionReview has no request") }
        let request = JSON.object(members)
        guard let uid = request["uid"]?.string, !uid.isEmpty else { return Self.badRequest("the AdmissionReview's request has no uid") }
        let where_ = "\(request["namespace"]?.string ?? "?")/\(request["name"]?.string ?? request[path: "object", "metadata", "generateName"]?.string ?? "?")"
        var response: JSON = ["uid": .string(uid), "allowed": true]
        let isPod = request[path: "kind", "kind"]?.string == "Pod" && (request[path: "kind", "group"]?.string ?? "") == ""
        if isPod && (request["operation"]?.string ?? "CREATE") == "CREATE" && request["subResource"] == nil {
            guard let pod = request["object"], pod.object != nil else { return Self.badRequest("the AdmissionReview's request has no object") }
            switch injector.inject(into: pod) {
            case .notRequested:
                break
            case .alreadyInjected(let container):
                logger.info("pod \(where_): agent \(container) already there")
            case .skipped(let warning):
                logger.warning("pod \(where_): \(warning)")
                response["warnings"] = [.string(warning)]
            case .injected(let role, let container, let operations):
                do {
                    response["patchType"] = "JSONPatch"
                    response["patch"] = .string(try JSONPatch.document(operations).base64EncodedString())
                    logger.notice("pod \(where_): \(role) agent injected as container \(container)")
                } catch {
                    response["patchType"] = nil
                    response["warnings"] = [.string("the patch could not be encoded: \(error)")]
                }
            }
        }
        let answer: JSON = ["apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response]
        do {
            return Answer(status: 200, body: try answer.data(sorted: true))
        } catch {
            return Answer(status: 500, body: Data("the answer could not be encoded: \(error)\n".utf8))
        }
    }

    static func badRequest(_ message: String) -> Answer {
        Answer(status: 400, body: Data((message + "\n").utf8))
    }
}
