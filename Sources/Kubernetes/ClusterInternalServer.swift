import ControllerCore
import Foundation
import HummingbirdBcrypt
import KubernetesAPI
import Logging
import Repository

/// How the internal backup server is made in a cluster.
public struct InternalServerSettings: Sendable {
    /// The image running `chebackup rest-server`.
    public var image = "quay.io/example/chebackup:0.1.0"
    /// The PersistentVolumeClaim's size and class (nil: the cluster's default class).
    public var storageSize = "10Gi"
    public var storageClass: String?
    /// How long an operation waits for the Deployment to be Available.
    public var readyTimeout: Duration = .seconds(300)
    public var pollInterval: Duration = .seconds(1)
    /// The host and port the configuration names: the Service's DNS name and port 8000 unless
    /// set (a controller outside the cluster reaches the server through a port-forward).
    public var host: String?
    public var port = 8000
    public init() {}
}

/// The internal backup server in a cluster, made by the controller on first use and kept: a
/// Deployment running `chebackup rest-server` with an htpasswd file from a generated Secret, a
/// Service, a PersistentVolumeClaim, the CheBackupServerConfiguration `chebackup-internal` and
/// its Secrets (a random repository password, REST credentials). Everything is labelled
/// `app.kubernetes.io/part-of=che-backup`, so a restore's clean-up of Che's objects never
/// touches it. What exists is found and reused, never replaced: above all the password.
struct ClusterInternalServer: InternalServerHost {
    static let name = "chebackup-internal-server"
    static let restUser = "chebackup"
    static let labels: JSON = ["app.kubernetes.io/part-of": "che-backup", "app.kubernetes.io/component": "internal-backup-server"]
    static var passwordSecret: String { Engine.internalConfigurationName }
    static var credentialsSecret: String { Engine.internalConfigurationName + "-rest-credentials" }

    let client: KubeClient
    let namespace: String
    let store: KubeResourceStore
    let settings: InternalServerSettings
    let logger: Logger

    func ensureConfiguration() async throws -> String {
        try await ensureObjects()
        return Engine.internalConfigurationName
    }

    func withRunning<T: Sendable>(stage: @escaping @Sendable (String) -> Void, _ body: () async throws -> T) async throws -> T {
        try await ensureObjects()
        stage("Waiting until the internal backup server (Deployment \(Self.name)) is Available")
        let deadline = ContinuousClock.now + settings.readyTimeout
        while true {
            if let deployment = try await client.getIfPresent(.deployments, Self.name, namespace: namespace),
               CheDeployment.isAvailable(deployment, replicas: 1) {
                break
            }
            guard ContinuousClock.now < deadline else {
                throw ControllerError(.store, "the internal backup server (Deployment \(Self.name) in namespace \(namespace)) did not become Available within \(CheDeployment.format(settings.readyTimeout)): see kubectl describe deployment \(Self.name)")
            }
            try await Task.sleep(for: settings.pollInterval)
        }
        return try await body()
    }

    /// Creates whatever is missing, in the order the server needs it.
    func ensureObjects() async throws {
        try await createIfMissing(.secrets, Self.secret(Self.passwordSecret, ["repo-password": Primitives.random(32).base64EncodedString()]))
        try await ensureCredentials()
        try await createIfMissing(.persistentVolumeClaims, persistentVolumeClaim())
        try await createIfMissing(.deployments, deployment())
        try await createIfMissing(.services, service())
        if try await store.get(CheBackupServerConfiguration.self, Engine.internalConfigurationName) == nil {
            let rest = RestServerSpec(protocol: "http", hostname: settings.host ?? "\(Self.name).\(namespace).svc", port: settings.port,
                                      repositoryPath: "che", repositoryPasswordSecretRef: Self.passwordSecret,
                                      credentialsSecretRef: Self.credentialsSecret)
            let labels = (Self.labels.object ?? [:]).compactMapValues(\.string)
            let configuration = CheBackupServerConfiguration(
                metadata: ObjectMeta(name: Engine.internalConfigurationName, namespace: namespace, labels: labels), spec: .init(rest: rest))
            do {
                try await store.create(configuration, replace: false)
                logger.notice("created the CheBackupServerConfiguration \(Engine.internalConfigurationName) for the internal backup server")
            } catch let error as KubeError where error.code == .alreadyExists {}
        }
    }

    /// The REST credentials and the htpasswd entry the server checks, in one Secret. A Secret
    /// made without the entry (by hand) gets it added; its password is kept.
    func ensureCredentials() async throws {
        // Made only when missing: a bcrypt hash costs some 50 ms of CPU, and this runs before
        // every operation on the internal server.
        try await createIfMissing(.secrets, named: Self.credentialsSecret) {
            let password = Primitives.random(24).base64EncodedString()
            return Self.secret(Self.credentialsSecret, [
                "username": Self.restUser, "password": password, "htpasswd": "\(Self.restUser):\(Bcrypt.hash(password, cost: 10))\n",
            ])
        }
        guard let secret = try await store.secret(Self.credentialsSecret) else { return }
        guard let user = secret.value("username"), let pass = secret.value("password") else {
            throw ControllerError(.notFound, "secret \(Self.credentialsSecret) (the internal server's REST credentials) has no username or password")
        }
        if secret.value("htpasswd") == nil {
            var object = try await client.get(.secrets, Self.credentialsSecret, namespace: namespace)
            object[path: "data", "htpasswd"] = .string(Data("\(user):\(Bcrypt.hash(pass, cost: 10))\n".utf8).base64EncodedString())
            _ = try await client.replace(.secrets, object, namespace: namespace)
        }
    }

    func createIfMissing(_ resource: KubeResource, _ object: JSON) async throws {
        guard let name = object.name else { return }
        try await createIfMissing(resource, named: name) { object }
    }

    /// Creates the object `make` builds (only then) when none named `name` exists.
    func createIfMissing(_ resource: KubeResource, named name: String, _ make: () -> JSON) async throws {
        if try await client.getIfPresent(resource, name, namespace: namespace) != nil { return }
        do {
            _ = try await client.create(resource, make(), namespace: namespace)
            logger.notice("created \(resource.kind) \(name) for the internal backup server")
        } catch let error as KubeError where error.code == .alreadyExists {}
    }

    static func secret(_ name: String, _ values: [String: String]) -> JSON {
        ["apiVersion": "v1", "kind": "Secret", "type": "Opaque",
         "metadata": ["name": .string(name), "labels": labels],
         "data": .object(values.mapValues { .string(Data($0.utf8).base64EncodedString()) })]
    }

    func persistentVolumeClaim() -> JSON {
        var spec: JSON = ["accessModes": ["ReadWriteOnce"], "resources": ["requests": ["storage": .string(settings.storageSize)]]]
        if let storageClass = settings.storageClass { spec["storageClassName"] = .string(storageClass) }
        return ["apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": ["name": .string(Self.name), "labels": Self.labels], "spec": spec]
    }

    func deployment() -> JSON {
        let container: JSON = [
            "name": "rest-server", "image": .string(settings.image), "imagePullPolicy": "IfNotPresent",
            "command": ["chebackup", "rest-server", "--path", "/data", "--listen", ":8000", "--htpasswd", "/etc/chebackup-rest/htpasswd"],
            "ports": [["name": "http", "containerPort": 8000, "protocol": "TCP"]],
            "readinessProbe": ["tcpSocket": ["port": "http"], "periodSeconds": 5],
            "livenessProbe": ["tcpSocket": ["port": "http"], "periodSeconds": 20],
            "resources": ["requests": ["cpu": "50m", "memory": "64Mi"], "limits": ["memory": "1Gi"]],
            "securityContext": ["allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": ["drop": ["ALL"]]],
            "volumeMounts": [["name": "data", "mountPath": "/data"],
                             ["name": "htpasswd", "mountPath": "/etc/chebackup-rest", "readOnly": true]],
        ]
        return [
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": ["name": .string(Self.name), "labels": Self.labels],
            "spec": [
                "replicas": 1, "strategy": ["type": "Recreate"],  // one writer on a ReadWriteOnce volume
                "selector": ["matchLabels": Self.labels],
                "template": [
                    "metadata": ["labels": Self.labels],
                    "spec": [
                        "automountServiceAccountToken": false,
                        "securityContext": ["runAsNonRoot": true, "runAsUser": 1001, "fsGroup": 1001, "seccompProfile": ["type": "RuntimeDefault"]],
                        "containers": [container],
                        "volumes": [["name": "data", "persistentVolumeClaim": ["claimName": .string(Self.name)]],
                                    ["name": "htpasswd", "secret": ["secretName": .string(Self.credentialsSecret), "defaultMode": .int(0o440),
                                                                    "items": [["key": "htpasswd", "path": "htpasswd"]]]]],
                    ],
                ],
            ],
        ]
    }

    func service() -> JSON {
        ["apiVersion": "v1", "kind": "Service", "metadata": ["name": .string(Self.name), "labels": Self.labels],
         "spec": ["selector": Self.labels, "ports": [["name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"]]]]
    }
}
