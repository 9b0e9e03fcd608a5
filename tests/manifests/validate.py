#!/usr/bin/env python3
"""Offline checks of manifests/ and the Containerfile: the CRDs against
Sources/ControllerCore/Model.swift (fields, types, required, the OperationState enum), the Secret
keys the examples give against the ones Sources/ControllerCore/BackupServer.swift reads, every
example against the CRDs' schemas (valid ones must pass, manifests/examples/invalid/ ones must
fail) and the examples' built-in objects against Kubernetes' schemas, `kubectl kustomize` of the
base (the controller Deployment, the Role's and the ClusterRole's exact rules, the webhook's
Deployment, Service and MutatingWebhookConfiguration) and of the example overlays (the sidecars'
label and port; the injection labels and annotations), every rendered built-in object against
Kubernetes 1.32's schemas (kubernetes-validate --strict, offline), and the Containerfile parsed
(it cannot be built here: no container engine): its stages, base images, both products built,
the runtime packages, the non-root user.

Each CRD's openAPIV3Schema becomes a JSON Schema: x-kubernetes-* keys are dropped, `nullable`
becomes a null type, and objects that list properties get additionalProperties: false, as
kubectl's default --validate=strict rejects unknown fields. A Swift file that is missing is a
FAIL, not a skip. Prints one line per check and `N passed, M failed`; exits 0 iff nothing
failed. Needs PyYAML, jsonschema and kubernetes-validate (scripts/install-deps.sh).
"""
import copy
import glob
import os
import re
import shutil
import subprocess
import sys

import jsonschema
import yaml

try:
    import kubernetes_validate
except ImportError:   # reported as a FAIL by each check that needs it
    kubernetes_validate = None

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MANIFESTS = os.path.join(ROOT, "manifests")
EXAMPLES = os.path.join(MANIFESTS, "examples")
MODEL_SWIFT = os.path.join(ROOT, "Sources", "ControllerCore", "Model.swift")
BACKUP_SERVER_SWIFT = os.path.join(ROOT, "Sources", "ControllerCore", "BackupServer.swift")
KUBERNETES_VERSION = "1.32.0"
CUSTOM_GROUPS = {"org.eclipse.che"}   # kinds the CRD checks cover; every other kind is built in
IMAGE = "quay.io/example/chebackup:0.1.0"   # the image every manifest runs (Containerfile)

results = {"passed": 0, "failed": 0}


def check(ok, name, detail="", note=""):
    """One line: PASS or FAIL, the check, and why it failed (detail) or a note on a pass."""
    results["passed" if ok else "failed"] += 1
    extra = detail if not ok else note
    print(f"{'PASS' if ok else 'FAIL'} {name}" + (f" ({extra})" if extra else ""))


def rel(path):
    return os.path.relpath(path, ROOT)


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# --- CRDs -> JSON Schema ---------------------------------------------------------------

VALUE_VALIDATION_FORBIDDEN = {"type", "description", "default", "additionalProperties", "nullable"}


def structural_problems(node, path="", in_validation=False):
    """The parts of Kubernetes' structural-schema rules that matter here."""
    problems = []
    if not isinstance(node, dict):
        return problems
    if in_validation:
        for key in VALUE_VALIDATION_FORBIDDEN & node.keys():
            problems.append(f"{path}: {key} not allowed inside allOf/anyOf/oneOf/not")
    else:
        if "type" not in node and not node.get("x-kubernetes-int-or-string") and not node.get("x-kubernetes-preserve-unknown-fields"):
            problems.append(f"{path or '/'}: no type")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: properties and additionalProperties together")
    for key in ("allOf", "anyOf", "oneOf"):
        for i, sub in enumerate(node.get(key, [])):
            problems += structural_problems(sub, f"{path}/{key}[{i}]", True)
    if "not" in node:
        problems += structural_problems(node["not"], f"{path}/not", True)
    for name, sub in node.get("properties", {}).items():
        problems += structural_problems(sub, f"{path}/{name}", in_validation)
    if isinstance(node.get("items"), dict):
        problems += structural_problems(node["items"], f"{path}/items", in_validation)
    return problems


def to_json_schema(node, in_validation=False):
    if isinstance(node, list):
        return [to_json_schema(n, in_validation) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key == "properties":
            out[key] = {k: to_json_schema(v, in_validation) for k, v in value.items()}
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_json_schema(v, True) for v in value]
        elif key in ("items", "not", "additionalProperties") and isinstance(value, dict):
            out[key] = to_json_schema(value, in_validation or key == "not")
        else:
            out[key] = copy.deepcopy(value)
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if ("properties" in node and not in_validation and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


crds = {}  # kind -> (crd, version, json schema)
for path in sorted(glob.glob(os.path.join(MANIFESTS, "crds", "*.yaml"))):
    for crd in load_docs(path):
        ok = crd.get("apiVersion") == "apiextensions.k8s.io/v1" and crd.get("kind") == "CustomResourceDefinition"
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        ok = ok and spec.get("group") == "org.eclipse.che" and spec.get("scope") == "Namespaced"
        ok = ok and crd["metadata"]["name"] == f"{names.get('plural')}.{spec.get('group')}"
        check(ok, f"{rel(path)}: {names.get('kind')} is a namespaced org.eclipse.che CRD named <plural>.<group>")
        for version in spec.get("versions", []):
            schema = version["schema"]["openAPIV3Schema"]
            problems = structural_problems(schema)
            check(not problems, f"{rel(path)}: {names['kind']}/{version['name']} schema is structural", "; ".join(problems))
            json_schema = to_json_schema(schema)
            try:
                jsonschema.Draft202012Validator.check_schema(json_schema)
                check(True, f"{rel(path)}: {names['kind']}/{version['name']} schema is a valid JSON Schema")
            except jsonschema.SchemaError as e:
                check(False, f"{rel(path)}: {names['kind']}/{version['name']} schema is a valid JSON Schema", e.message)
            if version.get("storage"):
                crds[names["kind"]] = (crd, version, json_schema)

check(set(crds) == {"CheBackupServerConfiguration", "CheClusterBackup", "CheClusterRestore", "CheClusterBackupSchedule"},
      "the four CRDs are present", f"found {sorted(crds)}")

for kind in ("CheClusterBackup", "CheClusterRestore"):
    if kind in crds:
        _, version, _ = crds[kind]
        columns = [c["name"] for c in version.get("additionalPrinterColumns", [])]
        check(version.get("subresources", {}).get("status") == {} and columns == ["State", "Stage", "Snapshot", "Age"],
              f"{kind}: status subresource and columns State, Stage, Snapshot, Age", f"columns {columns}")


# --- CRDs against Model.swift ------------------------------------------------------------

def swift_types(path):
    """(structs, enums) of a Swift file: struct name (nested as Outer.Inner) -> [(field, swift
    type, optional)] for its stored properties with a declared type (`var x: T`, `public var`,
    `let`; not static, not computed); enum name -> [raw values] of its `case x = "Raw"` cases."""
    structs, enums, stack, depth = {}, {}, [], 0
    for line in open(path):
        code = line.split("//", 1)[0]
        m = re.match(r"\s*(?:(?:public|internal|private|fileprivate|package)\s+)?(struct|enum) (\w+)\b[^{]*\{", code)
        if m:
            name = ".".join([s for s, _, _ in stack] + [m.group(2)])
            stack.append((m.group(2), depth, m.group(1)))
            (structs if m.group(1) == "struct" else enums)[name] = []
        elif stack and depth == stack[-1][1] + 1:
            owner = ".".join(s for s, _, _ in stack)
            if stack[-1][2] == "struct":
                f = re.match(r"\s*(?:(?:public|internal|private|fileprivate|package)(?:\(set\))?\s+)*(?:var|let) `?(\w+)`?: ([\w\[\]: ]+?)(\?)?(?:\s*=.*)?$",
                             code.rstrip())
                if f:
                    structs[owner].append((f.group(1), f.group(2).strip(), bool(f.group(3))))
            else:
                for case in re.finditer(r'(?:case|,)\s*`?\w+`?\s*=\s*"([^"]*)"', code):
                    enums[owner].append(case.group(1))
        depth += code.count("{") - code.count("}")
        while stack and depth <= stack[-1][1]:
            stack.pop()
    return structs, enums


SWIFT_TYPES = {"String": "string", "Int": "integer", "Int64": "integer", "Int32": "integer",
               "Bool": "boolean", "Double": "number"}


def schema_at(kind, *path):
    node = crds[kind][1]["schema"]["openAPIV3Schema"]
    for p in path:
        node = node["properties"][p]
    return node


def compare_with_model():
    name = f"{rel(MODEL_SWIFT)} is there to compare the CRDs with"
    if not os.path.exists(MODEL_SWIFT):
        check(False, name, "missing: point validate.py at the file that declares the resource model")
        return
    if len(crds) != 4:
        check(False, name, "the four CRDs are needed for the comparison")
        return
    structs, enums = swift_types(MODEL_SWIFT)
    check("OperationState" in enums and enums["OperationState"] == ["InProgress", "Succeeded", "Failed"],
          f"{rel(MODEL_SWIFT)}: OperationState is InProgress, Succeeded, Failed", f"found {enums.get('OperationState')}")
    pairs = [
        ("RestServerSpec", "CheBackupServerConfiguration", ("spec", "rest")),
        ("AwsS3ServerSpec", "CheBackupServerConfiguration", ("spec", "awss3")),
        ("SftpServerSpec", "CheBackupServerConfiguration", ("spec", "sftp")),
        ("CheBackupServerConfiguration.Spec", "CheBackupServerConfiguration", ("spec",)),
        ("CheClusterBackup.Spec", "CheClusterBackup", ("spec",)),
        ("CheClusterRestore.Spec", "CheClusterRestore", ("spec",)),
        ("OperationStatus", "CheClusterBackup", ("status",)),
        ("OperationStatus", "CheClusterRestore", ("status",)),
        ("CheClusterBackupSchedule.Spec", "CheClusterBackupSchedule", ("spec",)),
        ("RetentionSpec", "CheClusterBackupSchedule", ("spec", "retention")),
        ("ScheduleStatus", "CheClusterBackupSchedule", ("status",)),
    ]
    for struct, kind, path in pairs:
        fields = structs.get(struct)
        node = schema_at(kind, *path)
        problems = []
        if not fields:
            problems.append(f"no struct {struct} with fields in {os.path.basename(MODEL_SWIFT)}")
        else:
            props = node.get("properties", {})
            if set(props) != {f for f, _, _ in fields}:
                problems.append(f"fields {sorted(f for f, _, _ in fields)} vs schema {sorted(props)}")
            required = {f for f, _, optional in fields if not optional}
            if set(node.get("required", [])) != required:
                problems.append(f"required {sorted(required)} vs schema {sorted(node.get('required', []))}")
            for f, t, _ in fields:
                if f not in props:
                    continue
                if t in enums:   # a String-backed enum: a string with exactly its raw values
                    if props[f].get("type") != "string" or props[f].get("enum") != enums[t]:
                        problems.append(f"{f}: {t} {enums[t]} vs {props[f].get('type')} enum {props[f].get('enum')}")
                elif t.startswith("[") and t.endswith("]") and ":" not in t:   # [T]: an array of T
                    item = t[1:-1]
                    if props[f].get("type") != "array" or props[f].get("items", {}).get("type") != SWIFT_TYPES.get(item, "object"):
                        problems.append(f"{f}: {t} vs {props[f].get('type')} of {props[f].get('items', {}).get('type')}")
                elif props[f].get("type") != SWIFT_TYPES.get(t, "object"):
                    problems.append(f"{f}: {t} vs {props[f].get('type')}")
        check(not problems, f"{kind} .{'.'.join(path)} matches {struct} in {os.path.basename(MODEL_SWIFT)}", "; ".join(problems))
    # ObjectMeta (labels, annotations, uid, resourceVersion, generation, ...) is validated by
    # the API server itself: a CRD may not describe metadata beyond `type: object`.
    meta_ok = structs.get("ObjectMeta") and all(schema_at(k, "metadata") == {"type": "object"} for k in crds)
    check(bool(meta_ok), "metadata is `type: object` in every CRD (ObjectMeta is the server's)",
          f"ObjectMeta fields {structs.get('ObjectMeta')}")


if len(crds) == 4:
    compare_with_model()
else:
    check(False, "CRDs against Model.swift", "the four CRDs are needed for the comparison")


# --- Secret keys against BackupServer.swift ------------------------------------------------

SECRET_KEYS = {  # the keys Che and chectl use; BackupServer.swift must read exactly these
    "repositoryPasswordSecretRef": ["repo-password"],
    "credentialsSecretRef": ["username", "password"],
    "awsAccessKeySecretRef": ["awsAccessKeyId", "awsSecretAccessKey"],
    "sshKeySecretRef": ["ssh-privatekey"],
}


def secret_keys_read(path):
    """SecretRef field -> keys, from `secret(x.fieldSecretRef, "key", ...)` calls (and
    `if let local = x.fieldSecretRef` bindings passed as `secret(local, "key", ...)`)."""
    text = open(path).read()
    aliases = {m.group(1): m.group(2) for m in re.finditer(r"if let (\w+) = \w+\.(\w+SecretRef)\b", text)}
    found = {}
    for m in re.finditer(r'secret\(([\w.]+), "([^"]+)"', text):
        ref = m.group(1).split(".")[-1]
        field = ref if ref.endswith("SecretRef") else aliases.get(ref)
        if field and m.group(2) not in found.setdefault(field, []):
            found[field].append(m.group(2))
    return found


if os.path.exists(BACKUP_SERVER_SWIFT):
    read = secret_keys_read(BACKUP_SERVER_SWIFT)
    check(read == SECRET_KEYS, f"{rel(BACKUP_SERVER_SWIFT)} reads the Secret keys Che uses",
          f"it reads {read}", note=", ".join(f"{k}: {'/'.join(v)}" for k, v in read.items()))
else:
    check(False, f"{rel(BACKUP_SERVER_SWIFT)} is there to read the Secret keys from", "missing")


# --- examples ----------------------------------------------------------------------------

def validate(doc):
    """None if doc is a valid custom resource, else the reason."""
    kind = doc.get("kind")
    if kind not in crds:
        return f"unknown kind {kind}"
    crd, version, schema = crds[kind]
    if doc.get("apiVersion") != f"{crd['spec']['group']}/{version['name']}":
        return f"apiVersion {doc.get('apiVersion')}"
    if not isinstance(doc.get("metadata"), dict) or not doc["metadata"].get("name"):
        return "no metadata.name"
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        return "; ".join(f"{'.'.join(map(str, e.path)) or '/'}: {e.message}" for e in errors)
    return None


def builtin_problem(doc):
    """None if doc, an object of a built-in kind, is valid for Kubernetes KUBERNETES_VERSION
    (unknown fields rejected), else the reason."""
    if kubernetes_validate is None:
        return "kubernetes-validate is not installed: python3 -m pip install kubernetes-validate (scripts/install-deps.sh)"
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return f"{'.'.join(map(str, e.path)) or '/'}: {e.message}"
    except Exception as e:   # no schema for the kind or version: say so, never pass silently
        return f"{type(e).__name__}: {e}"
    return None


def is_builtin(doc):
    return doc.get("apiVersion", "").split("/")[0] not in CUSTOM_GROUPS


valid_files = sorted(glob.glob(os.path.join(EXAMPLES, "*.yaml")))
invalid_files = sorted(glob.glob(os.path.join(EXAMPLES, "invalid", "*.yaml")))
check(bool(valid_files) and bool(invalid_files), "there are valid and invalid examples")

secrets, configs, refs = {}, set(), []
for path in valid_files:
    for doc in load_docs(path):
        name = f"{rel(path)}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
        if is_builtin(doc):   # Secrets, and the stand-alone backup server's objects
            reason = builtin_problem(doc)
            check(reason is None, f"{name} is valid for Kubernetes {KUBERNETES_VERSION} (kubernetes-validate --strict)", reason)
            if doc.get("kind") == "Secret":
                secrets[doc["metadata"]["name"]] = set(doc.get("stringData", {})) | set(doc.get("data", {}))
            continue
        reason = validate(doc)
        check(reason is None, f"{name} is valid", reason)
        spec = doc.get("spec", {})
        if doc.get("kind") == "CheBackupServerConfiguration":
            configs.add(doc["metadata"]["name"])
            for backend in spec.values():
                for field, keys in SECRET_KEYS.items():
                    if field in backend:
                        refs.append((name, field, backend[field], keys))
        elif spec.get("backupServerConfigRef"):
            refs.append((name, "backupServerConfigRef", spec["backupServerConfigRef"], None))

for name, field, target, keys in refs:
    if keys is None:
        check(target in configs, f"{name}: {field} {target} is an example CheBackupServerConfiguration")
    else:
        missing = [k for k in keys if k not in secrets.get(target, set())]
        check(target in secrets and not missing, f"{name}: {field} {target} has keys {', '.join(keys)}",
              "no such Secret" if target not in secrets else f"missing {missing}")


def standalone_server_problems(path):
    """The stand-alone backup server example (not in the base: the controller creates the
    internal one): PVC, Deployment and Service, in eclipse-che, its Service selecting its pods only."""
    if not os.path.exists(path):
        return ["missing"]
    docs = {(d["kind"], d["metadata"]["name"]): d for d in load_docs(path)}
    problems = []
    pvc = docs.get(("PersistentVolumeClaim", "che-backup-server-data"))
    deployment = docs.get(("Deployment", "che-backup-server"))
    service = docs.get(("Service", "che-backup-server"))
    if not (pvc and deployment and service):
        return [f"PVC che-backup-server-data, Deployment and Service che-backup-server wanted, found {sorted(docs)}"]
    if pvc["spec"]["resources"]["requests"]["storage"] != "10Gi":
        problems.append("PVC not 10Gi")
    if [p["port"] for p in service["spec"]["ports"]] != [8000]:
        problems.append("Service not on 8000")
    pod = deployment["spec"]["template"]
    command = pod["spec"]["containers"][0].get("command", [])
    if command[:2] != ["chebackup", "rest-server"] or "--htpasswd" not in command:
        problems.append(f"command {command}")
    if not set(service["spec"]["selector"].items()) <= set(pod["metadata"]["labels"].items()):
        problems.append("the Service does not select the Deployment's pods")
    if service["spec"]["selector"].get("app.kubernetes.io/component") != "standalone-backup-server":
        problems.append("the Service's selector is not component=standalone-backup-server: it could pick the internal server's pods")
    problems += [f"{k} {n} not in eclipse-che" for (k, n), d in docs.items() if d["metadata"].get("namespace") != "eclipse-che"]
    return problems


problems = standalone_server_problems(os.path.join(EXAMPLES, "standalone-backup-server.yaml"))
check(not problems, "manifests/examples/standalone-backup-server.yaml: PVC 10Gi, `chebackup rest-server` Deployment, "
      "Service on 8000 selecting only its pods, all in eclipse-che", "; ".join(problems))

for path in invalid_files:
    docs = [d for d in load_docs(path) if not is_builtin(d)]
    for doc in docs:
        reason = validate(doc)
        if reason is not None and len(reason) > 160:
            reason = reason[:157] + "..."
        check(reason is not None, f"{rel(path)}: {doc.get('kind')} {doc.get('metadata', {}).get('name')} is rejected",
              "it validates", note=reason or "")
    if not docs:
        check(False, f"{rel(path)} holds a resource to reject")


# --- kustomize ---------------------------------------------------------------------------

def kustomize(directory, expect):
    name = f"kubectl kustomize {rel(directory)}"
    if shutil.which("kubectl") is None:
        print(f"SKIP {name} (kubectl is not on PATH)")
        return
    run = subprocess.run(["kubectl", "kustomize", directory], capture_output=True, text=True)
    if run.returncode != 0:
        check(False, name, run.stderr.strip())
        return
    check(True, name)
    docs = [d for d in yaml.safe_load_all(run.stdout) if d]
    for description, predicate in expect:
        outcome = predicate(docs)
        if isinstance(outcome, list):   # a list of problems: passes when empty
            check(not outcome, f"{name}: {description}", "; ".join(outcome))
        else:
            check(bool(outcome), f"{name}: {description}")


def find(docs, kind, name):
    return next((d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


def containers(docs, name):
    d = find(docs, "Deployment", name)
    return {c["name"]: c for c in d["spec"]["template"]["spec"]["containers"]} if d else {}


CLUSTER_SCOPED_KINDS = {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration"}


def namespaced_in_che(docs):
    """Namespaced objects in eclipse-che; cluster-scoped ones with no namespace at all."""
    return ([f"{d['kind']} {d['metadata']['name']}: namespace {d['metadata'].get('namespace')}"
             for d in docs if d["kind"] not in CLUSTER_SCOPED_KINDS and d["metadata"].get("namespace") != "eclipse-che"]
            + [f"{d['kind']} {d['metadata']['name']} is cluster-scoped but has namespace {d['metadata']['namespace']}"
               for d in docs if d["kind"] in CLUSTER_SCOPED_KINDS and "namespace" in d["metadata"]])


def controller(docs):
    return containers(docs, "che-backup-controller").get("controller", {})


def webhook(docs):
    return containers(docs, "chebackup-webhook").get("webhook", {})


def pod_spec(docs, name):
    d = find(docs, "Deployment", name)
    return d["spec"]["template"]["spec"] if d else {}


def env_from_field(container, name, field_path):
    return any(e.get("name") == name and e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == field_path
               for e in container.get("env", []))


def controller_volumes_ok(docs):
    spec = pod_spec(docs, "che-backup-controller")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {m["mountPath"]: m["name"] for m in controller(docs).get("volumeMounts", [])}
    return (list(volumes) == ["tmp"] and "emptyDir" in volumes["tmp"] and mounts == {"/tmp": "tmp"})


def no_agent_token_in_controller(docs):
    """The agents' token is read through the API, never mounted or put in the environment."""
    d = find(docs, "Deployment", "che-backup-controller")
    return d is not None and "che-backup-agent-token" not in yaml.safe_dump(d)


def restricted(docs, deployment, container, service_account):
    spec = pod_spec(docs, deployment)
    sc = spec.get("securityContext", {})
    csc = containers(docs, deployment).get(container, {}).get("securityContext", {})
    return (sc.get("runAsNonRoot") is True and sc.get("runAsUser") == 1001
            and sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
            and csc.get("allowPrivilegeEscalation") is False and csc.get("readOnlyRootFilesystem") is True
            and csc.get("capabilities", {}).get("drop") == ["ALL"] and spec.get("serviceAccountName") == service_account)


# What the controller and server:backup|restore --kubernetes call on the API server, in their
# namespace: (apiGroup, resource, resourceNames or None) -> verbs. The Role must grant exactly
# this: a verb limited to names here must be limited to exactly those names there.
INTERNAL_SERVER = "chebackup-internal-server"   # its Deployment, Service and PVC, created by the controller
EXPECTED_RIGHTS = {
    ("org.eclipse.che", "checlusterbackups", None): {"get", "list", "watch", "create", "delete"},
    ("org.eclipse.che", "checlusterrestores", None): {"get", "list", "watch", "create", "delete"},
    ("org.eclipse.che", "checlusterbackups/status", None): {"get", "update"},
    ("org.eclipse.che", "checlusterbackupschedules", None): {"get", "list", "watch"},
    ("org.eclipse.che", "checlusterbackupschedules/status", None): {"get", "update"},
    ("org.eclipse.che", "checlusterrestores/status", None): {"get", "update"},
    # also the internal server's configuration chebackup-internal
    ("org.eclipse.che", "chebackupserverconfigurations", None): {"get", "list", "watch", "create", "update"},
    ("org.eclipse.che", "checlusters", None): {"get", "list", "create", "delete"},
    # also chebackup-internal, chebackup-internal-rest-credentials, chebackup-webhook-tls
    ("", "secrets", None): {"get", "list", "create", "update", "delete"},
    ("", "configmaps", None): {"get", "list", "create", "delete"},
    ("", "pods", None): {"get", "list"},
    ("", "events", None): {"create"},
    ("", "services", None): {"create"},
    ("", "services", (INTERNAL_SERVER,)): {"get"},
    ("", "persistentvolumeclaims", None): {"create"},
    ("", "persistentvolumeclaims", (INTERNAL_SERVER,)): {"get"},
    ("apps", "deployments", None): {"get", "list", "create"},
    ("apps", "deployments/scale", None): {"get", "patch", "update"},
    ("coordination.k8s.io", "leases", None): {"create"},
    ("coordination.k8s.io", "leases", ("che-backup-controller",)): {"get", "update"},
}
# ... and cluster-wide, only this: the caBundle of the webhook's configuration.
WEBHOOK_CONFIGURATION = "chebackup-sidecar-injector"
EXPECTED_CLUSTER_RIGHTS = {
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", (WEBHOOK_CONFIGURATION,)): {"get", "patch"},
}
# ... and for the workspace claims in the users' namespaces (Kubernetes/WorkspaceClaims.swift).
EXPECTED_WORKSPACE_RIGHTS = {
    ("", "persistentvolumeclaims", None): {"get", "list", "create"},
    ("", "pods", None): {"list"},
    ("", "namespaces", None): {"get", "create"},
    ("batch", "jobs", None): {"create", "delete"},
    ("", "secrets", None): {"create", "delete"},
}
# Resources that are not namespaced (or not only): a Role granting them grants nothing, or
# something else than it says; they belong in a ClusterRole, if anywhere.
CLUSTER_SCOPED_RESOURCES = {
    ("", "namespaces"), ("", "nodes"), ("", "persistentvolumes"), ("", "componentstatuses"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
    ("admissionregistration.k8s.io", "validatingadmissionpolicies"),
    ("rbac.authorization.k8s.io", "clusterroles"), ("rbac.authorization.k8s.io", "clusterrolebindings"),
    ("storage.k8s.io", "storageclasses"), ("certificates.k8s.io", "certificatesigningrequests"),
    ("scheduling.k8s.io", "priorityclasses"), ("apiregistration.k8s.io", "apiservices"),
}


def rules_rights(role):
    """A Role's or ClusterRole's rules as (group, resource, names) -> verbs, and the problems that
    rule out a fair comparison (wildcards, nonResourceURLs)."""
    rights, problems = {}, []
    for rule in role.get("rules", []):
        if "nonResourceURLs" in rule:
            problems.append(f"nonResourceURLs in {role['kind']} {role['metadata']['name']}")
        names = tuple(rule["resourceNames"]) if rule.get("resourceNames") is not None else None
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                verbs = set(rule.get("verbs", []))
                if "*" in verbs or "*" in (group, resource):
                    problems.append(f"wildcard in {rule}")
                rights.setdefault((group, resource, names), set()).update(verbs)
    return rights, problems


def rights_exact(kind, name, expected):
    def problems_of(docs):
        role = find(docs, kind, name)
        if role is None:
            return [f"no {kind} {name}"]
        rights, problems = rules_rights(role)
        for key in sorted(set(rights) | set(expected), key=lambda k: (k[0], k[1], k[2] or ())):
            got, want = rights.get(key, set()), expected.get(key, set())
            if got != want:
                extra, missing = sorted(got - want), sorted(want - got)
                names = f" named {list(key[2])}" if key[2] else ""
                problems.append(f"{key[0] or 'core'}/{key[1]}{names}: " + ", ".join(
                    ([f"extra {extra}"] if extra else []) + ([f"missing {missing}"] if missing else [])))
        return problems
    return problems_of


def role_namespaced_only(docs):
    """The Role holds nothing cluster-scoped (that is the ClusterRole's, and only the webhook's)."""
    role = find(docs, "Role", "che-backup-controller") or {}
    return [f"{g or 'core'}/{r} in the Role" for g, r, _ in rules_rights(role)[0] if (g, r.split("/")[0]) in CLUSTER_SCOPED_RESOURCES]


def lease_by_name_only(docs):
    """Reading and renewing the Lease is limited to che-backup-controller (create cannot be)."""
    role = find(docs, "Role", "che-backup-controller") or {}
    for rule in role.get("rules", []):
        if "leases" in rule.get("resources", []) and {"get", "update"} & set(rule.get("verbs", [])):
            if rule.get("resourceNames") != ["che-backup-controller"]:
                return False
    return True


def rule_comments(path):
    """Every rule in rbac.yaml has a comment above it saying why."""
    lines = open(path).read().splitlines()
    rules = [i for i, line in enumerate(lines) if re.match(r"\s*- apiGroups:", line)]
    return [i + 1 for i in rules if not lines[i - 1].strip().startswith("#")]


CONTROLLER_SUBJECTS = [{"kind": "ServiceAccount", "name": "che-backup-controller", "namespace": "eclipse-che"}]


def binding_ok(docs):
    b = find(docs, "RoleBinding", "che-backup-controller")
    return (b is not None and b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "che-backup-controller"}
            and b["subjects"] == CONTROLLER_SUBJECTS)


def cluster_binding_ok(docs, name="che-backup-controller-webhook"):
    b = find(docs, "ClusterRoleBinding", name)
    return (b is not None and b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}
            and b["subjects"] == CONTROLLER_SUBJECTS)


def only_expected_cluster_rbac(docs):
    """No other ClusterRole or ClusterRoleBinding: the cluster-wide rights are the webhook's only."""
    found = sorted((d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding"))
    want = sorted([(kind, name) for kind in ("ClusterRole", "ClusterRoleBinding")
                   for name in ("che-backup-controller-webhook", "che-backup-controller-workspaces")])
    return [] if found == want else [f"found {found}"]


def labelled_ours(docs):
    return all(d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "che-backup" for d in docs)


WEBHOOK_LABELS = {"app.kubernetes.io/part-of": "che-backup", "app.kubernetes.io/component": "webhook"}
WEBHOOK_COMMAND = ["chebackup", "webhook", "--listen", ":8443",
                   "--tls-cert", "/etc/chebackup-webhook/tls.crt", "--tls-key", "/etc/chebackup-webhook/tls.key",
                   "--agent-image", IMAGE]


def webhook_deployment(docs):
    d = find(docs, "Deployment", "chebackup-webhook")
    if d is None:
        return ["no Deployment chebackup-webhook"]
    problems = []
    if d["spec"].get("replicas") != 2:
        problems.append(f"replicas {d['spec'].get('replicas')}")
    for where, labels in (("metadata", d["metadata"].get("labels", {})),
                          ("selector", d["spec"]["selector"].get("matchLabels", {})),
                          ("pod template", d["spec"]["template"]["metadata"].get("labels", {}))):
        if not WEBHOOK_LABELS.items() <= labels.items():
            problems.append(f"{where} labels {labels}")
    c = webhook(docs)
    if c.get("command") != WEBHOOK_COMMAND:
        problems.append(f"command {c.get('command')}")
    if c.get("image") != IMAGE:
        problems.append(f"image {c.get('image')} (the --agent-image is {IMAGE})")
    if [(p.get("name"), p.get("containerPort")) for p in c.get("ports", [])] != [("https", 8443)]:
        problems.append(f"ports {c.get('ports')}")
    probe = c.get("readinessProbe", {}).get("httpGet", {})
    if (probe.get("path"), probe.get("port"), probe.get("scheme")) != ("/healthz", "https", "HTTPS"):
        problems.append(f"readinessProbe {c.get('readinessProbe')}")
    return problems


def webhook_tls_volume(docs):
    """The serving certificate from the Secret chebackup-webhook-tls (made by the controller),
    read-only at /etc/chebackup-webhook, not optional (the pod waits for it), no subPath (so
    renewals reach the files)."""
    spec = pod_spec(docs, "chebackup-webhook")
    volumes = [v for v in spec.get("volumes", []) if v.get("secret", {}).get("secretName") == "chebackup-webhook-tls"]
    if len(volumes) != 1:
        return [f"volumes {spec.get('volumes')}"]
    secret, problems = volumes[0]["secret"], []
    if secret.get("optional"):
        problems.append("optional: the pod must wait for the certificate")
    items = secret.get("items")
    if items is not None and sorted(i["key"] for i in items) != ["tls.crt", "tls.key"]:
        problems.append(f"items {items}")
    mounts = [m for m in webhook(docs).get("volumeMounts", []) if m["name"] == volumes[0]["name"]]
    if [(m.get("mountPath"), m.get("readOnly"), m.get("subPath")) for m in mounts] != [("/etc/chebackup-webhook", True, None)]:
        problems.append(f"mounts {mounts}")
    return problems


def webhook_without_token(docs):
    """The webhook calls no API: its ServiceAccount and pods have no token mounted."""
    sa = find(docs, "ServiceAccount", "chebackup-webhook")
    spec = pod_spec(docs, "chebackup-webhook")
    return (sa is not None and sa.get("automountServiceAccountToken") is False
            and spec.get("automountServiceAccountToken") is not True
            and "che-backup-agent-token" not in yaml.safe_dump(find(docs, "Deployment", "chebackup-webhook")))


def webhook_service(docs):
    s = find(docs, "Service", "chebackup-webhook")
    d = find(docs, "Deployment", "chebackup-webhook")
    if s is None or d is None:
        return ["no Service or Deployment chebackup-webhook"]
    problems = []
    if [(p.get("port"), p.get("targetPort")) for p in s["spec"]["ports"]] != [(443, "https")]:
        problems.append(f"ports {s['spec']['ports']}")
    if not s["spec"].get("selector") or not s["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items():
        problems.append("its selector does not pick the webhook's pods")
    return problems


def webhook_configuration(docs):
    m = find(docs, "MutatingWebhookConfiguration", WEBHOOK_CONFIGURATION)
    if m is None:
        return [f"no MutatingWebhookConfiguration {WEBHOOK_CONFIGURATION}"]
    hooks = m.get("webhooks", [])
    if [h.get("name") for h in hooks] != ["inject.chebackup.eclipse.org"]:
        return [f"webhooks {[h.get('name') for h in hooks]}"]
    h, problems = hooks[0], []
    want = {
        "clientConfig": {"service": {"namespace": "eclipse-che", "name": "chebackup-webhook", "path": "/inject", "port": 443}},
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}],
        "failurePolicy": "Ignore",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 5,
        "reinvocationPolicy": "Never",
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "eclipse-che"}},
        "objectSelector": {"matchExpressions": [{"key": "chebackup.eclipse.org/inject", "operator": "In", "values": ["postgres", "files"]}]},
    }
    for key, value in want.items():
        if h.get(key) != value:
            problems.append(f"{key}: {h.get(key)!r}, want {value!r}")
    extra = sorted(set(h) - set(want) - {"name"})
    if extra:   # caBundle in particular: the controller writes it
        problems.append(f"unexpected {extra}")
    return problems


def internal_server_not_in_base(docs):
    """The controller creates the internal backup server itself; the base must not also make one."""
    return [f"{d['kind']} {d['metadata']['name']}" for d in docs
            if d["kind"] in ("PersistentVolumeClaim", "Service", "Deployment")
            and ("backup-server" in d["metadata"].get("labels", {}).get("app.kubernetes.io/component", "")
                 or d["metadata"]["name"] in (INTERNAL_SERVER, "che-backup-server", "che-backup-server-data"))]


def images_are_ours(docs):
    return [f"{d['metadata']['name']}/{c['name']}: {c.get('image')}" for d in docs if d["kind"] == "Deployment"
            for c in d["spec"]["template"]["spec"]["containers"] if c.get("image") != IMAGE]


kustomize(MANIFESTS, [
    ("four CRDs", lambda docs: sum(d["kind"] == "CustomResourceDefinition" for d in docs) == 4),
    ("namespaced objects in eclipse-che, cluster-scoped ones without a namespace", namespaced_in_che),
    ("everything labelled app.kubernetes.io/part-of: che-backup", labelled_ours),
    ("ServiceAccount, Role and RoleBinding che-backup-controller",
     lambda docs: all(find(docs, k, "che-backup-controller") for k in ("ServiceAccount", "Role", "RoleBinding"))),
    ("the RoleBinding gives the Role to the ServiceAccount", binding_ok),
    ("the Role grants exactly what the controller calls in its namespace",
     rights_exact("Role", "che-backup-controller", EXPECTED_RIGHTS)),
    ("the Role holds nothing cluster-scoped", role_namespaced_only),
    ("the Lease is read and renewed by name only", lease_by_name_only),
    (f"the ClusterRole che-backup-controller-webhook grants exactly get, patch on the MutatingWebhookConfiguration {WEBHOOK_CONFIGURATION}",
     rights_exact("ClusterRole", "che-backup-controller-webhook", EXPECTED_CLUSTER_RIGHTS)),
    ("the ClusterRoleBinding gives it to the controller's ServiceAccount in eclipse-che", cluster_binding_ok),
    ("ClusterRole che-backup-controller-workspaces grants exactly what the workspace agents need",
     rights_exact("ClusterRole", "che-backup-controller-workspaces", EXPECTED_WORKSPACE_RIGHTS)),
    ("its ClusterRoleBinding gives it to the controller's ServiceAccount",
     lambda docs: cluster_binding_ok(docs, "che-backup-controller-workspaces")),
    ("no other cluster-wide rights", only_expected_cluster_rbac),
    ("controller runs `chebackup controller --kubernetes --identity $(POD_NAME)`, POD_NAME from metadata.name",
     lambda docs: controller(docs).get("command") == ["chebackup", "controller", "--kubernetes", "--identity", "$(POD_NAME)"]
     and env_from_field(controller(docs), "POD_NAME", "metadata.name")),
    ("controller: 2 replicas, RollingUpdate",
     lambda docs: (d := find(docs, "Deployment", "che-backup-controller")) is not None
     and d["spec"].get("replicas") == 2 and d["spec"].get("strategy", {}).get("type", "RollingUpdate") == "RollingUpdate"),
    ("controller: restricted securityContext, its own service account",
     lambda docs: restricted(docs, "che-backup-controller", "controller", "che-backup-controller")),
    ("controller: only a /tmp emptyDir, no state volume", controller_volumes_ok),
    ("controller: no state PVC, no configuration ConfigMap",
     lambda docs: find(docs, "PersistentVolumeClaim", "che-backup-controller-state") is None
     and not any(d["kind"] == "ConfigMap" for d in docs)),
    ("controller: the agent token is not in its pod (read through the API)", no_agent_token_in_controller),
    ("no internal backup server objects (the controller creates chebackup-internal-server itself)", internal_server_not_in_base),
    (f"every container runs {IMAGE}", images_are_ours),
    ("webhook: 2 replicas labelled component webhook, `chebackup webhook` on port https 8443, readiness GET /healthz over HTTPS",
     webhook_deployment),
    ("webhook: restricted securityContext, its own service account",
     lambda docs: restricted(docs, "chebackup-webhook", "webhook", "chebackup-webhook")),
    ("webhook: no service account token, no agent token (it calls no API)", webhook_without_token),
    ("webhook: certificate from Secret chebackup-webhook-tls, read-only at /etc/chebackup-webhook, waited for", webhook_tls_volume),
    ("webhook: Service chebackup-webhook 443 -> https, selecting its pods", webhook_service),
    (f"MutatingWebhookConfiguration {WEBHOOK_CONFIGURATION}: inject.chebackup.eclipse.org, CREATE pods, "
     "eclipse-che and inject=postgres|files only, Ignore, no side effects, v1, 5 s, no reinvocation, no caBundle",
     webhook_configuration),
])
missing_comments = rule_comments(os.path.join(MANIFESTS, "rbac.yaml"))
check(not missing_comments, "manifests/rbac.yaml: every rule is commented with why",
      f"no comment above the rule on line(s) {missing_comments}")


def agent(docs, deployment, role, port):
    d = find(docs, "Deployment", deployment)
    if d is None:
        return False
    c = containers(docs, deployment).get("chebackup-agent", {})
    command = c.get("command", [])
    return (d["spec"]["template"]["metadata"].get("labels", {}).get("chebackup.eclipse.org/agent") == role
            and "--role" in command and command[command.index("--role") + 1] == role
            and [(p.get("name"), p.get("containerPort")) for p in c.get("ports", [])] == [("chebackup-agent", port)])


kustomize(os.path.join(EXAMPLES, "overlay"), [
    ("postgres: pod label chebackup.eclipse.org/agent=postgres, a postgres-role agent on port chebackup-agent 7001",
     lambda docs: agent(docs, "postgres", "postgres", 7001)),
    ("che: pod label chebackup.eclipse.org/agent=files, a files-role agent on port chebackup-agent 7002",
     lambda docs: agent(docs, "che", "files", 7002)),
    ("che: the files agent shares /home/user/che with the che container",
     lambda docs: "che-data=/home/user/che" in containers(docs, "che").get("chebackup-agent", {}).get("command", [])
     and all(any(m["mountPath"] == "/home/user/che" and m["name"] == "che-data" for m in x.get("volumeMounts", []))
             for x in containers(docs, "che").values())),
    ("the Deployments' selectors still match their pod templates",
     lambda docs: all(set(d["spec"]["selector"]["matchLabels"].items()) <= set(d["spec"]["template"]["metadata"]["labels"].items())
                      for d in docs if d["kind"] == "Deployment")),
    ("no agent Service (the controller reaches the agents at status.podIP)",
     lambda docs: not any(d["kind"] == "Service" for d in docs)),
])



def pod_template_meta(docs, deployment):
    d = find(docs, "Deployment", deployment)
    return d["spec"]["template"]["metadata"] if d else {}


def asks_for(docs, deployment, role, annotation, value):
    meta = pod_template_meta(docs, deployment)
    return (meta.get("labels", {}).get("chebackup.eclipse.org/inject") == role
            and meta.get("annotations", {}).get(annotation) == value)


def dirs_on_volumes(docs, deployment):
    """Every PATH of chebackup.eclipse.org/dirs (NAME=PATH,...) is a volume mount of an app
    container: the injected agent can only see another container's files on a shared volume."""
    value = pod_template_meta(docs, deployment).get("annotations", {}).get("chebackup.eclipse.org/dirs", "")
    mounts = {m["mountPath"] for c in containers(docs, deployment).values() for m in c.get("volumeMounts", [])}
    entries = [e for e in value.split(",") if e]
    if not entries:
        return ["no chebackup.eclipse.org/dirs annotation"]
    return [f"{e}: not a volume mount" for e in entries if e.partition("=")[2] not in mounts]


def left_to_the_webhook(docs):
    """No agent container and no agent label in the templates: the webhook adds both to the pods."""
    return [f"{d['metadata']['name']}: {what}" for d in docs if d["kind"] == "Deployment"
            for what, present in (("agent container", "chebackup-agent" in containers(docs, d["metadata"]["name"])),
                                  ("agent label", "chebackup.eclipse.org/agent" in pod_template_meta(docs, d["metadata"]["name"]).get("labels", {})))
            if present]


def injection_values_selected(docs):
    """The inject labels used here are ones the MutatingWebhookConfiguration's objectSelector selects."""
    run = subprocess.run(["kubectl", "kustomize", MANIFESTS], capture_output=True, text=True)
    if run.returncode != 0:
        return ["the base does not render"]
    mwc = find([d for d in yaml.safe_load_all(run.stdout) if d], "MutatingWebhookConfiguration", WEBHOOK_CONFIGURATION)
    if mwc is None:
        return ["no MutatingWebhookConfiguration in the base"]
    selected = {v for e in mwc["webhooks"][0].get("objectSelector", {}).get("matchExpressions", [])
                if e["key"] == "chebackup.eclipse.org/inject" and e["operator"] == "In" for v in e["values"]}
    used = {pod_template_meta(docs, d["metadata"]["name"]).get("labels", {}).get("chebackup.eclipse.org/inject")
            for d in docs if d["kind"] == "Deployment"}
    return [f"inject={v} is not selected by the webhook ({sorted(selected)})" for v in sorted(used - selected, key=str)]


kustomize(os.path.join(EXAMPLES, "injection"), [
    ("postgres: pod template labelled chebackup.eclipse.org/inject=postgres, annotation postgres-secret=postgres-credentials",
     lambda docs: asks_for(docs, "postgres", "postgres", "chebackup.eclipse.org/postgres-secret", "postgres-credentials")),
    ("che: pod template labelled chebackup.eclipse.org/inject=files, annotation dirs=che-data=/home/user/che",
     lambda docs: asks_for(docs, "che", "files", "chebackup.eclipse.org/dirs", "che-data=/home/user/che")),
    ("che: the directories named in dirs are on volumes of the che container", lambda docs: dirs_on_volumes(docs, "che")),
    ("the Deployments' selectors still match their pod templates",
     lambda docs: all(set(d["spec"]["selector"]["matchLabels"].items()) <= set(d["spec"]["template"]["metadata"]["labels"].items())
                      for d in docs if d["kind"] == "Deployment")),
    ("no agent container or agent label in the templates (the webhook adds them)", left_to_the_webhook),
    ("the inject labels are ones the webhook's objectSelector selects", injection_values_selected),
    ("in eclipse-che, the namespace the webhook's namespaceSelector names",
     lambda docs: all(d["metadata"].get("namespace") == "eclipse-che" for d in docs)),
])

# --- built-in objects against Kubernetes' schemas ------------------------------------------------

def validate_builtins(directory):
    """Every rendered object of a built-in kind against Kubernetes' own schemas, strictly
    (unknown fields rejected), offline. Objects of custom kinds are skipped: the CRD checks above
    cover them."""
    name = f"kubectl kustomize {rel(directory)}: built-in objects valid for Kubernetes {KUBERNETES_VERSION} (kubernetes-validate --strict)"
    if kubernetes_validate is None:
        check(False, name, "kubernetes-validate is not installed: python3 -m pip install kubernetes-validate (scripts/install-deps.sh)")
        return
    if shutil.which("kubectl") is None:
        print(f"SKIP {name} (kubectl is not on PATH)")
        return
    run = subprocess.run(["kubectl", "kustomize", directory], capture_output=True, text=True)
    if run.returncode != 0:
        check(False, name, run.stderr.strip())
        return
    problems, count = [], 0
    for doc in (d for d in yaml.safe_load_all(run.stdout) if d):
        if not is_builtin(doc):
            continue
        count += 1
        problem = builtin_problem(doc)
        if problem:
            problems.append(f"{doc['kind']} {doc['metadata'].get('name')}: {problem}")
    kinds = sorted({d["kind"] for d in yaml.safe_load_all(run.stdout) if d and is_builtin(d)})
    check(not problems and count > 0, name, "; ".join(problems) or "no built-in object rendered",
          note=f"{count} objects: {', '.join(kinds)}")


validate_builtins(MANIFESTS)
validate_builtins(os.path.join(EXAMPLES, "overlay"))
validate_builtins(os.path.join(EXAMPLES, "injection"))


# --- the image -----------------------------------------------------------------------------
# No container engine runs here, so the Containerfile is never built by these checks: it is
# parsed, and what the manifests rely on (both commands, PostgreSQL 15's client for the postgres
# agent, uid 1001 as their runAsUser) is checked in its text.

CONTAINERFILE = os.path.join(ROOT, "Containerfile")


def containerfile_instructions(path):
    """[(INSTRUCTION, arguments)] with comments dropped and continuation lines joined."""
    instructions, pending = [], ""
    for line in open(path).read().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if pending and line.lstrip().startswith("#"):   # a comment inside a continued instruction
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    return instructions


def stages(instructions):
    """(ARGs before the first FROM with their defaults, [(image, stage name, [instructions])])."""
    args, out = {}, []
    for word, rest in instructions:
        if word == "FROM":
            m = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$", rest, re.IGNORECASE)
            out.append((m.group(1) if m else rest, m.group(2) if m else None, []))
        elif not out:
            if word == "ARG":
                name, _, default = rest.partition("=")
                args[name.strip()] = default.strip()
        else:
            out[-1][2].append((word, rest))
    return args, out


def expand(image, args):
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)


def installed_packages(stage_instructions):
    """The packages `apt-get install` lines of a stage name (options and shell operators dropped)."""
    packages = set()
    for word, rest in stage_instructions:
        if word != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", rest):
            tokens = command.split()
            if "apt-get" in tokens and "install" in tokens:
                packages.update(t for t in tokens[tokens.index("install") + 1:] if not t.startswith("-") and "=" not in t)
    return packages


def containerfile_problems(path):
    if not os.path.exists(path):
        return None, ["missing"]
    args, found = stages(containerfile_instructions(path))
    problems = []
    if len(found) != 2:
        return found, [f"{len(found)} stages, want 2 (build, runtime)"]
    (build_image, build_name, build), (run_image, run_name, runtime) = found
    if args.get("SWIFT_IMAGE") != "docker.io/library/swift:6.1-bookworm":
        problems.append(f"ARG SWIFT_IMAGE default {args.get('SWIFT_IMAGE')!r}")
    if build_image != "${SWIFT_IMAGE}" or not build_name:
        problems.append(f"build stage FROM {build_image} AS {build_name}, want FROM ${{SWIFT_IMAGE}} AS <name>")
    if not re.fullmatch(r"(docker\.io/(library/)?)?debian:12-slim", expand(run_image, args)):
        problems.append(f"runtime FROM {run_image}, want debian:12-slim")
    runs = " ; ".join(rest for word, rest in build if word == "RUN")
    for product in ("chebackup", "chebackup-agent"):
        ok = any(re.search(rf"--product\s+{re.escape(product)}(\s|$)", c) and "-c release" in c and "--static-swift-stdlib" in c
                 for c in re.split(r"&&|;", runs) if "swift build" in c)
        if not ok:
            problems.append(f"no `swift build -c release --static-swift-stdlib --product {product}` in the build stage")
    missing = {"libcurl4-openssl-dev", "liblz4-dev", "libssl-dev"} - installed_packages(build)
    if missing:
        problems.append(f"build stage does not install {sorted(missing)}")
    missing = {"libcurl4", "liblz4-1", "libssl3", "ca-certificates", "tzdata", "postgresql-client-15"} - installed_packages(runtime)
    if missing:
        problems.append(f"runtime stage does not install {sorted(missing)}")
    copies = [rest for word, rest in runtime if word == "COPY" and f"--from={build_name}" in rest.split()]
    for binary in ("chebackup", "chebackup-agent"):
        if not any(re.search(rf"/{re.escape(binary)}(\s|$)", c) and c.split()[-1].rstrip("/") == "/usr/local/bin" for c in copies):
            problems.append(f"{binary} not copied from the build stage to /usr/local/bin")
    users = [rest for word, rest in runtime if word == "USER"]
    if users[-1:] != ["1001"]:
        problems.append(f"the runtime's last USER is {users[-1:] or 'missing'}, want the numeric non-root 1001")
    if [rest for word, rest in runtime if word == "WORKDIR"][-1:] != ["/home/chebackup"]:
        problems.append("WORKDIR is not /home/chebackup")
    if any(word == "ENTRYPOINT" for word, _ in build + runtime):
        problems.append("an ENTRYPOINT: the manifests pick the command")
    cmds = [rest for word, rest in runtime if word == "CMD"]
    if cmds[-1:] != ['["chebackup", "--help"]'] and cmds[-1:] != ['["chebackup","--help"]']:
        problems.append(f"CMD {cmds[-1:]}, want [\"chebackup\", \"--help\"]")
    return found, problems


found, problems = containerfile_problems(CONTAINERFILE)
check(not problems, "Containerfile: build stage FROM ${SWIFT_IMAGE} (swift:6.1-bookworm) builds chebackup and chebackup-agent "
      "(release, static stdlib); runtime debian:12-slim with libcurl4, liblz4-1, libssl3, ca-certificates, tzdata, "
      "postgresql-client-15, both binaries in /usr/local/bin, USER 1001, WORKDIR /home/chebackup, no ENTRYPOINT, "
      "CMD chebackup --help", "; ".join(problems), note="parsed only: not built, no container engine here")


def run_as_users(directory):
    run = subprocess.run(["kubectl", "kustomize", directory], capture_output=True, text=True) if shutil.which("kubectl") else None
    if run is None or run.returncode != 0:
        return None
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"].get("securityContext", {}).get("runAsUser")
            for d in yaml.safe_load_all(run.stdout) if d and d["kind"] == "Deployment"}


users = run_as_users(MANIFESTS)
check(users is not None and users and set(users.values()) == {1001},
      "the base's Deployments run as uid 1001, the Containerfile's USER", f"runAsUser {users}")


def ignore_problems():
    problems, contents = [], []
    for name in (".containerignore", ".dockerignore"):
        path = os.path.join(ROOT, name)
        if not os.path.exists(path):
            problems.append(f"no {name}")
            continue
        patterns = [l.strip() for l in open(path) if l.strip() and not l.lstrip().startswith("#")]
        contents.append(patterns)
        missing = [p for p in (".build*", "bench-work", ".git") if p not in patterns]
        if missing:
            problems.append(f"{name} does not exclude {missing}")
    if len(contents) == 2 and contents[0] != contents[1]:
        problems.append(".containerignore and .dockerignore differ")
    return problems


problems = ignore_problems()
check(not problems, ".containerignore and .dockerignore (the same patterns) keep .build*, bench-work and .git out of the build context",
      "; ".join(problems))

print(f"{results['passed']} passed, {results['failed']} failed")
sys.exit(0 if results["failed"] == 0 else 1)
