#!/usr/bin/env python3
"""Offline checks of manifests/: the CRDs against Sources/ControllerCore/Model.swift (fields,
types, required, the OperationState enum), the Secret keys the examples give against the ones
Sources/ControllerCore/BackupServer.swift reads, every example against the CRDs' schemas (valid
ones must pass, manifests/examples/invalid/ ones must fail), `kubectl kustomize` of the base and
the example overlay (the controller Deployment, the Role's exact rules, the agents' label and
port), and every rendered built-in object against Kubernetes 1.32's schemas
(kubernetes-validate --strict, offline).

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

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MANIFESTS = os.path.join(ROOT, "manifests")
EXAMPLES = os.path.join(MANIFESTS, "examples")
MODEL_SWIFT = os.path.join(ROOT, "Sources", "ControllerCore", "Model.swift")
BACKUP_SERVER_SWIFT = os.path.join(ROOT, "Sources", "ControllerCore", "BackupServer.swift")
KUBERNETES_VERSION = "1.32.0"

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

check(set(crds) == {"CheBackupServerConfiguration", "CheClusterBackup", "CheClusterRestore"},
      "the three CRDs are present", f"found {sorted(crds)}")

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
    if len(crds) != 3:
        check(False, name, "the three CRDs are needed for the comparison")
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
                elif props[f].get("type") != SWIFT_TYPES.get(t, "object"):
                    problems.append(f"{f}: {t} vs {props[f].get('type')}")
        check(not problems, f"{kind} .{'.'.join(path)} matches {struct} in {os.path.basename(MODEL_SWIFT)}", "; ".join(problems))
    # ObjectMeta (labels, annotations, uid, resourceVersion, generation, ...) is validated by
    # the API server itself: a CRD may not describe metadata beyond `type: object`.
    meta_ok = structs.get("ObjectMeta") and all(schema_at(k, "metadata") == {"type": "object"} for k in crds)
    check(bool(meta_ok), "metadata is `type: object` in every CRD (ObjectMeta is the server's)",
          f"ObjectMeta fields {structs.get('ObjectMeta')}")


if len(crds) == 3:
    compare_with_model()
else:
    check(False, "CRDs against Model.swift", "the three CRDs are needed for the comparison")


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


valid_files = sorted(glob.glob(os.path.join(EXAMPLES, "*.yaml")))
invalid_files = sorted(glob.glob(os.path.join(EXAMPLES, "invalid", "*.yaml")))
check(bool(valid_files) and bool(invalid_files), "there are valid and invalid examples")

secrets, configs, refs = {}, set(), []
for path in valid_files:
    for doc in load_docs(path):
        name = f"{rel(path)}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
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

for path in invalid_files:
    docs = [d for d in load_docs(path) if d.get("kind") != "Secret"]
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


def namespaced_in_che(docs):
    return all(d["metadata"].get("namespace") == "eclipse-che"
               for d in docs if d["kind"] not in ("CustomResourceDefinition",))


def controller(docs):
    return containers(docs, "che-backup-controller").get("controller", {})


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


def restricted(docs):
    spec = pod_spec(docs, "che-backup-controller")
    sc, csc = spec.get("securityContext", {}), controller(docs).get("securityContext", {})
    return (sc.get("runAsNonRoot") is True and sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
            and csc.get("allowPrivilegeEscalation") is False and csc.get("readOnlyRootFilesystem") is True
            and csc.get("capabilities", {}).get("drop") == ["ALL"] and spec.get("serviceAccountName") == "che-backup-controller")


# What the controller and server:backup|restore --kubernetes call on the API server, in their
# namespace: (apiGroup, resource) -> verbs. The Role must grant exactly this.
EXPECTED_RIGHTS = {
    ("org.eclipse.che", "checlusterbackups"): {"get", "list", "watch", "create", "delete"},
    ("org.eclipse.che", "checlusterrestores"): {"get", "list", "watch", "create", "delete"},
    ("org.eclipse.che", "checlusterbackups/status"): {"get", "update"},
    ("org.eclipse.che", "checlusterrestores/status"): {"get", "update"},
    ("org.eclipse.che", "chebackupserverconfigurations"): {"get", "list", "watch", "create", "update"},
    ("org.eclipse.che", "checlusters"): {"get", "list", "create", "delete"},
    ("", "secrets"): {"get", "list", "create", "update", "delete"},
    ("", "configmaps"): {"get", "list", "create", "delete"},
    ("", "pods"): {"get", "list"},
    ("", "events"): {"create"},
    ("apps", "deployments"): {"get", "list"},
    ("apps", "deployments/scale"): {"get", "patch", "update"},
    ("coordination.k8s.io", "leases"): {"get", "create", "update"},
}


def role_rights(docs):
    """The Role's rules as (group, resource) -> verbs, and the problems that rule out a fair
    comparison (wildcards, nonResourceURLs, names other than the controller's Lease)."""
    role = find(docs, "Role", "che-backup-controller")
    rights, problems = {}, []
    if role is None:
        return rights, ["no Role che-backup-controller"]
    for rule in role.get("rules", []):
        if "nonResourceURLs" in rule:
            problems.append("nonResourceURLs in a Role")
        names = rule.get("resourceNames")
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                verbs = set(rule.get("verbs", []))
                if "*" in verbs or "*" in (group, resource):
                    problems.append(f"wildcard in {rule}")
                if names is not None and (group, resource, names) != ("coordination.k8s.io", "leases", ["che-backup-controller"]):
                    problems.append(f"unexpected resourceNames {names} on {resource}")
                rights.setdefault((group, resource), set()).update(verbs)
    return rights, problems


def rbac_exact(docs):
    rights, problems = role_rights(docs)
    for key in sorted(set(rights) | set(EXPECTED_RIGHTS)):
        got, want = rights.get(key, set()), EXPECTED_RIGHTS.get(key, set())
        if got != want:
            extra, missing = sorted(got - want), sorted(want - got)
            problems.append(f"{key[0] or 'core'}/{key[1]}: " + ", ".join(
                ([f"extra {extra}"] if extra else []) + ([f"missing {missing}"] if missing else [])))
    return problems


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


def binding_ok(docs):
    b = find(docs, "RoleBinding", "che-backup-controller")
    return (b is not None and b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "che-backup-controller"}
            and b["subjects"] == [{"kind": "ServiceAccount", "name": "che-backup-controller", "namespace": "eclipse-che"}])


def labelled_ours(docs):
    return all(d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "che-backup" for d in docs)


kustomize(MANIFESTS, [
    ("three CRDs", lambda docs: sum(d["kind"] == "CustomResourceDefinition" for d in docs) == 3),
    ("everything else in namespace eclipse-che", namespaced_in_che),
    ("everything labelled app.kubernetes.io/part-of: che-backup", labelled_ours),
    ("ServiceAccount, Role and RoleBinding che-backup-controller",
     lambda docs: all(find(docs, k, "che-backup-controller") for k in ("ServiceAccount", "Role", "RoleBinding"))),
    ("the RoleBinding gives the Role to the ServiceAccount", binding_ok),
    ("the Role grants exactly what the controller calls", rbac_exact),
    ("the Lease is read and renewed by name only", lease_by_name_only),
    ("controller runs `chebackup controller --kubernetes --identity $(POD_NAME)`, POD_NAME from metadata.name",
     lambda docs: controller(docs).get("command") == ["chebackup", "controller", "--kubernetes", "--identity", "$(POD_NAME)"]
     and env_from_field(controller(docs), "POD_NAME", "metadata.name")),
    ("controller: 2 replicas, RollingUpdate",
     lambda docs: (d := find(docs, "Deployment", "che-backup-controller")) is not None
     and d["spec"].get("replicas") == 2 and d["spec"].get("strategy", {}).get("type", "RollingUpdate") == "RollingUpdate"),
    ("controller: restricted securityContext, its own service account", restricted),
    ("controller: only a /tmp emptyDir, no state volume", controller_volumes_ok),
    ("controller: no state PVC, no configuration ConfigMap",
     lambda docs: find(docs, "PersistentVolumeClaim", "che-backup-controller-state") is None
     and not any(d["kind"] == "ConfigMap" for d in docs)),
    ("controller: the agent token is not in its pod (read through the API)", no_agent_token_in_controller),
    ("backup server Deployment, Service on 8000 and 10Gi PVC",
     lambda docs: find(docs, "Deployment", "che-backup-server") is not None
     and find(docs, "Service", "che-backup-server")["spec"]["ports"][0]["port"] == 8000
     and find(docs, "PersistentVolumeClaim", "che-backup-server-data")["spec"]["resources"]["requests"]["storage"] == "10Gi"),
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


# --- built-in objects against Kubernetes' schemas ------------------------------------------------

def validate_builtins(directory):
    """Every rendered object of a built-in kind against Kubernetes' own schemas, strictly
    (unknown fields rejected), offline. Objects of custom kinds are skipped: the CRD checks above
    cover them."""
    name = f"kubectl kustomize {rel(directory)}: built-in objects valid for Kubernetes {KUBERNETES_VERSION} (kubernetes-validate --strict)"
    try:
        import kubernetes_validate
    except ImportError:
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
        if doc.get("apiVersion", "").split("/")[0] in CUSTOM_GROUPS:
            continue
        count += 1
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{doc['kind']} {doc['metadata'].get('name')}: {'.'.join(map(str, e.path)) or '/'}: {e.message}")
        except Exception as e:   # no schema for the kind or version: say so, never pass silently
            problems.append(f"{doc['kind']} {doc['metadata'].get('name')}: {type(e).__name__}: {e}")
    check(not problems and count > 0, name, "; ".join(problems) or "no built-in object rendered", note=f"{count} objects")


CUSTOM_GROUPS = {"org.eclipse.che"}
validate_builtins(MANIFESTS)
validate_builtins(os.path.join(EXAMPLES, "overlay"))

print(f"{results['passed']} passed, {results['failed']} failed")
sys.exit(0 if results["failed"] == 0 else 1)
