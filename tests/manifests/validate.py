#!/usr/bin/env python3
"""Offline checks of manifests/: the CRDs against Sources/Controller/Resources.swift, every
example against the CRDs' schemas (valid ones must pass, manifests/examples/invalid/ ones must
fail), and `kubectl kustomize` on the base and the example overlay when kubectl is on PATH.

Each CRD's openAPIV3Schema becomes a JSON Schema: x-kubernetes-* keys are dropped, `nullable`
becomes a null type, and objects that list properties get additionalProperties: false, as
kubectl's default --validate=strict rejects unknown fields. Prints one line per check and
`N passed, M failed`; exits 0 iff nothing failed. Needs PyYAML and jsonschema.
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
RESOURCES_SWIFT = os.path.join(ROOT, "Sources", "Controller", "Resources.swift")

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


# --- CRDs against Resources.swift --------------------------------------------------------

def swift_structs(path):
    """struct name (nested as Outer.Inner) -> [(field, swift type, optional)]."""
    structs, stack, depth = {}, [], 0
    for line in open(path):
        m = re.match(r"\s*struct (\w+)\b[^{]*\{", line)
        if m:
            name = ".".join([s for s, _ in stack] + [m.group(1)])
            stack.append((m.group(1), depth))
            structs[name] = []
        elif stack and depth == stack[-1][1] + 1:
            f = re.match(r"\s*(?:var|let) `?(\w+)`?: ([\w\[\]: ]+?)(\?)?(?:\s*=.*)?$", line.rstrip())
            if f:
                structs[".".join(s for s, _ in stack)].append((f.group(1), f.group(2).strip(), bool(f.group(3))))
        depth += line.count("{") - line.count("}")
        while stack and depth <= stack[-1][1]:
            stack.pop()
    return structs


SWIFT_TYPES = {"String": "string", "Int": "integer", "Bool": "boolean"}


def schema_at(kind, *path):
    node = crds[kind][1]["schema"]["openAPIV3Schema"]
    for p in path:
        node = node["properties"][p]
    return node


if os.path.exists(RESOURCES_SWIFT) and len(crds) == 3:
    structs = swift_structs(RESOURCES_SWIFT)
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
        if fields is None:
            problems.append(f"no struct {struct} in Resources.swift")
        else:
            props = node.get("properties", {})
            if set(props) != {f for f, _, _ in fields}:
                problems.append(f"fields {sorted(f for f, _, _ in fields)} vs schema {sorted(props)}")
            required = {f for f, _, optional in fields if not optional}
            if set(node.get("required", [])) != required:
                problems.append(f"required {sorted(required)} vs schema {sorted(node.get('required', []))}")
            for f, t, _ in fields:
                want = SWIFT_TYPES.get(t, "object")
                if f in props and props[f].get("type") != want:
                    problems.append(f"{f}: {t} vs {props[f].get('type')}")
        check(not problems, f"{kind} .{'.'.join(path)} matches {struct} in Resources.swift", "; ".join(problems))
else:
    print("SKIP Resources.swift comparison (file or CRDs missing)")


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


SECRET_KEYS = {  # the keys Sources/Controller/Reconciler.swift reads
    "repositoryPasswordSecretRef": ["repo-password"],
    "credentialsSecretRef": ["username", "password"],
    "awsAccessKeySecretRef": ["awsAccessKeyId", "awsSecretAccessKey"],
    "sshKeySecretRef": ["ssh-privatekey"],
}

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
        check(predicate(docs), f"{name}: {description}")


def find(docs, kind, name):
    return next((d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


def containers(docs, name):
    d = find(docs, "Deployment", name)
    return {c["name"]: c for c in d["spec"]["template"]["spec"]["containers"]} if d else {}


def namespaced_in_che(docs):
    return all(d["metadata"].get("namespace") == "eclipse-che"
               for d in docs if d["kind"] not in ("CustomResourceDefinition",))


kustomize(MANIFESTS, [
    ("three CRDs", lambda docs: sum(d["kind"] == "CustomResourceDefinition" for d in docs) == 3),
    ("everything else in namespace eclipse-che", namespaced_in_che),
    ("ServiceAccount, Role and RoleBinding che-backup-controller",
     lambda docs: all(find(docs, k, "che-backup-controller") for k in ("ServiceAccount", "Role", "RoleBinding"))),
    ("controller runs `chebackup controller --config /etc/che-backup/chebackup.yaml`",
     lambda docs: containers(docs, "che-backup-controller").get("controller", {}).get("command")
     == ["chebackup", "controller", "--config", "/etc/che-backup/chebackup.yaml"]),
    ("backup server Deployment, Service on 8000 and 10Gi PVC",
     lambda docs: find(docs, "Deployment", "che-backup-server") is not None
     and find(docs, "Service", "che-backup-server")["spec"]["ports"][0]["port"] == 8000
     and find(docs, "PersistentVolumeClaim", "che-backup-server-data")["spec"]["resources"]["requests"]["storage"] == "10Gi"),
    ("the installation ConfigMap holds chebackup.yaml",
     lambda docs: any(d["kind"] == "ConfigMap" and "chebackup.yaml" in d.get("data", {}) for d in docs)),
])
kustomize(os.path.join(EXAMPLES, "overlay"), [
    ("postgres has a postgres-role agent on 7001",
     lambda docs: "--role" in (c := containers(docs, "postgres").get("chebackup-agent", {})).get("command", [])
     and c["command"][c["command"].index("--role") + 1] == "postgres" and c["ports"][0]["containerPort"] == 7001),
    ("che has a files-role agent on 7002 sharing /home/user/che with the che container",
     lambda docs: "che-data=/home/user/che" in (c := containers(docs, "che").get("chebackup-agent", {})).get("command", [])
     and c["ports"][0]["containerPort"] == 7002
     and all(any(m["mountPath"] == "/home/user/che" and m["name"] == "che-data" for m in x.get("volumeMounts", []))
             for x in containers(docs, "che").values())),
    ("agent Services for 7001 and 7002",
     lambda docs: find(docs, "Service", "chebackup-agent-postgres") is not None
     and find(docs, "Service", "chebackup-agent-che") is not None),
])

print(f"{results['passed']} passed, {results['failed']} failed")
sys.exit(0 if results["failed"] == 0 else 1)
