#!/usr/bin/env bash
# Checks the Kubernetes manifests in deploy/kubernetes, offline (no cluster needed):
#
#   1. schema: every YAML document of every file but kustomization.yaml validates against the
#      OpenAPI schemas of Kubernetes $K8S_VERSION with kubernetes-validate --strict (unknown
#      fields, wrong types and missing required fields are errors). A kind it has no schema for
#      is only a WARN line with exit status 0 there, so any WARN/ERROR/FATAL line fails here.
#   2. kustomization: kustomization.yaml lists exactly the .yaml files of the directory (each
#      once), sets namespace: trellis, and its images: entry names the image every container uses
#      (otherwise pointing it at another registry would silently change nothing).
#   3. consistency, what a schema cannot see: no duplicate YAML keys; each workload's selector
#      matches its pod labels; each Service selects a workload and its target ports exist there;
#      probe ports and volume mounts exist; a StatefulSet's serviceName is a headless Service;
#      every $(VAR) in args is an env variable of its container (Kubernetes would pass an
#      unknown one on literally); every pod runs as 65532, non-root, read-only root, no
#      privilege escalation, all capabilities dropped.
#   4. rendered: if kubectl is on PATH, `kubectl kustomize` renders the directory and the result
#      passes 1 too (skipped, and said so, without kubectl).
#   5. self-check: broken copies of the directory (a misspelled field, a wrong type, an unknown
#      field, an unknown kind, an unlisted file, an unknown $(VAR), a wrong port name, a
#      duplicate key) must each be rejected by the check meant to catch it, so a validator that
#      accepts everything cannot make this script pass.
#
# kubernetes-validate (PyPI, pinned below) is installed into a venv under the cargo target dir,
# ${CARGO_TARGET_DIR:-target}/deploy-venv, on first use.
#
# Usage: tests/deploy/kubernetes.sh    (from anywhere; about 5 s, plus about 10 s for the install)
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
manifests="$root/deploy/kubernetes"

say() { printf '== %s\n' "$*"; }
die() { printf 'kubernetes.sh: %s\n' "$*" >&2; exit 1; }

K8S_VERSION=1.30.0
# kubernetes-validate 1.34.1 carries the schemas of Kubernetes 1.25 to 1.34; its dependencies are
# pinned too, as their behaviour is what is checked.
PINS=(kubernetes-validate==1.34.1 jsonschema==4.26.0 referencing==0.37.0 PyYAML==6.0.4)

# --- kubernetes-validate in a venv under the target dir ----------------------------------------
target_dir="${CARGO_TARGET_DIR:-$root/target}"
[[ "$target_dir" = /* ]] || target_dir="$root/$target_dir"
venv="$target_dir/deploy-venv"
stamp="$venv/.pins"
if [[ ! -x "$venv/bin/kubernetes-validate" ]] || [[ "$(cat "$stamp" 2>/dev/null)" != "${PINS[*]}" ]]; then
    say "installing ${PINS[*]} into $venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}" \
        || die "pip install ${PINS[*]} failed"
    printf '%s' "${PINS[*]}" >"$stamp"
fi
py="$venv/bin/python"

tmp="$(mktemp -d -t deploy-kubernetes.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT

# --- check 2 and 3: a Python script, on a directory ---------------------------------------------
cat >"$tmp/consistency.py" <<'PY'
"""Checks 2 and 3 on the directory given; prints 'kustomization: ...' / 'consistency: ...'
lines and exits 1 if there is any."""
import os
import re
import sys

import yaml

directory = sys.argv[1]
problems = []


def problem(check, text):
    problems.append(f"{check}: {text}")


class UniqueKeyLoader(yaml.SafeLoader):
    pass


def construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)


def load(name):
    try:
        with open(os.path.join(directory, name)) as f:
            return [d for d in yaml.load_all(f, Loader=UniqueKeyLoader) if d is not None]
    except yaml.YAMLError as e:
        problem("consistency", f"{name}: {e}")
        return []


files = sorted(f for f in os.listdir(directory)
               if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml")
docs = []  # (file, document)
for name in files:
    for doc in load(name):
        if not isinstance(doc, dict):
            problem("consistency", f"{name}: a document is not a mapping")
            continue
        docs.append((name, doc))

# --- 2. kustomization.yaml -------------------------------------------------------------------
kustomization = (load("kustomization.yaml") or [{}])[0]
listed = kustomization.get("resources") or []
for name in sorted({n for n in listed if listed.count(n) > 1}):
    problem("kustomization", f"{name} is listed more than once")
for name in sorted(set(listed) - set(files)):
    problem("kustomization", f"{name} is listed but is not a .yaml file of the directory")
for name in sorted(set(files) - set(listed)):
    problem("kustomization", f"{name} is in the directory but not listed in resources:")
if kustomization.get("namespace") != "trellis":
    problem("kustomization", "namespace: trellis is missing")
image_names = {i.get("name") for i in kustomization.get("images") or []}
if not image_names:
    problem("kustomization", "no images: entry")


def name_of(doc):
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


# --- 3. consistency ---------------------------------------------------------------------------
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")
workloads = [(f, d) for f, d in docs if d.get("kind") in WORKLOADS]
services = [(f, d) for f, d in docs if d.get("kind") == "Service"]


def pod_spec(doc):
    return ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}


def pod_labels(doc):
    return (((doc.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


for f, w in workloads:
    where = f"{f}: {name_of(w)}"
    spec = w.get("spec") or {}
    if not matches((spec.get("selector") or {}).get("matchLabels"), pod_labels(w)):
        problem("consistency", f"{where}: selector.matchLabels do not match the pod labels")
    pod = pod_spec(w)
    psc = pod.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True or psc.get("runAsUser") != 65532:
        problem("consistency", f"{where}: the pod securityContext must set runAsNonRoot: true, runAsUser: 65532")
    volumes = {v.get("name") for v in pod.get("volumes") or []}
    volumes |= {(t.get("metadata") or {}).get("name") for t in spec.get("volumeClaimTemplates") or []}
    if w.get("kind") == "StatefulSet":
        headless = [d for _, d in services
                    if (d.get("metadata") or {}).get("name") == spec.get("serviceName")
                    and (d.get("spec") or {}).get("clusterIP") == "None"]
        if not headless:
            problem("consistency", f"{where}: serviceName {spec.get('serviceName')!r} is not a headless Service here")
    for c in pod.get("containers") or []:
        cwhere = f"{where}: container {c.get('name')}"
        image = c.get("image") or ""
        if re.sub(r"[:@].*$", "", image) not in image_names:
            problem("consistency", f"{cwhere}: image {image!r} is not named under images: in kustomization.yaml")
        ports = {p.get("name") for p in c.get("ports") or []} | {p.get("containerPort") for p in c.get("ports") or []}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            http = (c.get(probe) or {}).get("httpGet")
            if http and http.get("port") not in ports:
                problem("consistency", f"{cwhere}: {probe} port {http.get('port')!r} is not a port of the container")
        for m in c.get("volumeMounts") or []:
            if m.get("name") not in volumes:
                problem("consistency", f"{cwhere}: volumeMount {m.get('name')!r} is not a volume of the pod")
        env = {e.get("name") for e in c.get("env") or []}
        for arg in (c.get("command") or []) + (c.get("args") or []):
            for var in re.findall(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(arg)):
                if var not in env:
                    problem("consistency", f"{cwhere}: $({var}) in {arg!r} is not an env variable of the container")
        sc = c.get("securityContext") or {}
        caps = ((sc.get("capabilities") or {}).get("drop")) or []
        if not (sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
                and "ALL" in caps and sc.get("runAsNonRoot") is True):
            problem("consistency", f"{cwhere}: securityContext must set readOnlyRootFilesystem: true, "
                    "allowPrivilegeEscalation: false, runAsNonRoot: true, capabilities.drop: [ALL]")

for f, s in services:
    where = f"{f}: {name_of(s)}"
    spec = s.get("spec") or {}
    selected = [w for _, w in workloads if matches(spec.get("selector"), pod_labels(w))]
    if not selected:
        problem("consistency", f"{where}: its selector matches no workload here")
        continue
    for port in spec.get("ports") or []:
        target = port.get("targetPort", port.get("port"))
        protocol = port.get("protocol", "TCP")
        found = any(
            target in (p.get("name"), p.get("containerPort")) and p.get("protocol", "TCP") == protocol
            for w in selected for c in pod_spec(w).get("containers") or [] for p in c.get("ports") or [])
        if not found:
            problem("consistency", f"{where}: targetPort {target!r}/{protocol} is no container port of {name_of(selected[0])}")

if not docs:
    problem("consistency", "no Kubernetes documents found")
for p in problems:
    print(p)
sys.exit(1 if problems else 0)
PY

# --- check 1: schema validation of the files given --------------------------------------------
# validate FILE...: prints 'schema: ...' lines and returns 1 if a document does not validate.
validate() {
    local out="$tmp/validate.out" expected rc=0
    "$venv/bin/kubernetes-validate" --kubernetes-version "$K8S_VERSION" --strict "$@" >"$out" 2>&1 || rc=$?
    expected="$("$py" -c '
import sys, yaml
print(sum(1 for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d))' "$@" 2>/dev/null || echo '?')"
    if [[ "$rc" -ne 0 ]] || grep -qvE '^INFO ' "$out" || [[ "$(grep -c '^INFO .* passed ' "$out")" != "$expected" ]]; then
        # The ERROR lines, shortened to: file, resource, field path and message.
        grep -vE '^INFO ' "$out" | sed -E 's#^(ERROR|WARN) [^ ]*/([^/ ]+)#\1 \2#;
            s# did not validate for resource ([^ ]+) against version [0-9.]+:# \1:#; s/^/schema: /'
        [[ -s "$out" ]] || echo "schema: kubernetes-validate printed nothing"
        echo "schema: $(grep -c '^INFO .* passed ' "$out") of $expected documents passed (exit status $rc)"
        return 1
    fi
}

# check_dir DIR: checks 1 to 3 on the manifests in DIR.
check_dir() {
    local dir="$1" failed=0 files=()
    local f
    for f in "$dir"/*.yaml "$dir"/*.yml; do
        [[ -e "$f" && "$(basename "$f")" != kustomization.yaml ]] && files+=("$f")
    done
    if [[ ${#files[@]} -eq 0 ]]; then
        echo "schema: no manifest in $dir"
        return 1
    fi
    validate "${files[@]}" || failed=1
    "$py" "$tmp/consistency.py" "$dir" || failed=1
    return "$failed"
}

say "deploy/kubernetes: schemas of Kubernetes $K8S_VERSION (strict), kustomization, consistency"
check_dir "$manifests" >"$tmp/result" || { cat "$tmp/result"; die "deploy/kubernetes does not pass (see above)"; }
manifest_files=("$manifests"/*.y*ml)
echo "ok: $(grep -c '^INFO .* passed ' "$tmp/validate.out") documents in $((${#manifest_files[@]} - 1)) files, and kustomization.yaml"

say "rendered with kubectl kustomize"
if command -v kubectl >/dev/null; then
    kubectl kustomize "$manifests" >"$tmp/rendered.yaml" 2>"$tmp/kustomize.err" \
        || { cat "$tmp/kustomize.err"; die "kubectl kustomize deploy/kubernetes failed"; }
    validate "$tmp/rendered.yaml" >"$tmp/result" || { cat "$tmp/result"; die "the rendered manifests do not validate"; }
    grep -q '^  namespace: trellis$' "$tmp/rendered.yaml" || die "the rendered manifests have no namespace: trellis"
    echo "ok: $(grep -c '^kind: ' "$tmp/rendered.yaml") resources"
else
    echo "skipped: kubectl is not on PATH"
fi

# --- check 5: broken copies must fail, each by the check meant to catch it ---------------------
# expect_failure NAME CHECK EDIT: a fresh copy of deploy/kubernetes changed by the shell command
# EDIT (run in the copy) must fail check_dir, with a CHECK: line among the reasons.
expect_failure() {
    local name="$1" check="$2" edit="$3" dir="$tmp/broken-$1"
    cp -r "$manifests" "$dir"
    (cd "$dir" && eval "$edit")
    if cmp -s <(cat "$manifests"/*) <(cat "$dir"/*) && [[ "$(ls "$manifests")" == "$(ls "$dir")" ]]; then
        die "self-check: the edit of '$name' ($edit) changed nothing"
    fi
    if check_dir "$dir" >"$dir.why"; then
        die "self-check: the broken copy '$name' ($edit) passed: the checks prove nothing"
    fi
    grep -q "^$check: " "$dir.why" \
        || die "self-check: the broken copy '$name' was not caught by the $check check; it said: $(cat "$dir.why")"
    printf '    %-18s rejected: %s\n' "$name" "$(grep -m1 "^$check: " "$dir.why" | cut -c1-140)"
}

say "self-check: broken copies must be rejected"
expect_failure misspelled-field schema "sed -i '0,/^      containers:/s//      contianers:/' users.yaml"
expect_failure wrong-type schema "sed -i 's/^  replicas: 2$/  replicas: two/' users.yaml"
expect_failure unknown-field schema "sed -i '0,/imagePullPolicy:/s//imagePullPolicyy:/' gateway.yaml"
expect_failure unknown-kind schema "sed -i 's/^kind: Deployment$/kind: Deploymnet/' inventory.yaml"
expect_failure unlisted-file kustomization "cp gateway.yaml gateway-copy.yaml"
expect_failure unknown-variable consistency "sed -i 's/\$(POD_IP)/\$(POD_ADDRESS)/' users.yaml"
expect_failure wrong-port-name consistency "sed -i 's/targetPort: http$/targetPort: htp/' gateway.yaml"
expect_failure duplicate-key consistency "sed -i 's/^  replicas: 1$/  replicas: 1\n  replicas: 3/' inventory.yaml"
echo "ok"
say "deploy/kubernetes: all checks passed"
