#!/usr/bin/env bash
# Validates the Kubernetes manifests (deploy/k8s, or the files/directories given) with
# kubernetes-validate (PyPI), which bundles the API schemas of every Kubernetes release
# it knows: no cluster and no network needed once it is installed.
#
#   1. installs kubernetes-validate (major 1, pinned) into a venv under target/
#   2. validates every manifest strictly (an unknown field is an error) against each
#      version in K8S_VERSIONS; a manifest whose kind/apiVersion has no schema (a typo
#      such as apps/v2, which the tool only warns about) fails too
#   3. checks what a schema cannot: kustomization.yaml lists existing files and every
#      manifest but the Secret example, and the pods' terminationGracePeriodSeconds
#      covers the preStop sleep plus SCOREHUB_HTTP__SHUTDOWN_TIMEOUT (the hub's drain)
#
# Knobs (environment): K8S_VERSIONS (default "1.30.0 1.37.0": the oldest release the
# manifests target and the newest the tool has). Needs python3 with venv.
# Run it from anywhere: ./scripts/k8s-validate.sh [FILE|DIR]...
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
VENV=$TARGET/k8s-validate-venv
SPEC='kubernetes-validate>=1.37,<2'
read -r -a VERSIONS <<<"${K8S_VERSIONS:-1.30.0 1.37.0}"

die() {
    echo "k8s-validate.sh: $*" >&2
    exit 1
}

# ---- 1. kubernetes-validate, in its own venv --------------------------------

command -v python3 >/dev/null || die "python3 not found (Debian: apt-get install python3 python3-venv)"
if ! "$VENV/bin/python" -c 'import kubernetes_validate.version as v, sys; sys.exit(int(v.__version__.split(".")[0]) != 1)' 2>/dev/null; then
    echo "installing $SPEC into $VENV"
    rm -rf -- "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "$SPEC" ||
        die "pip install $SPEC failed"
fi
echo "kubernetes-validate $("$VENV/bin/kubernetes-validate" --version)"

# ---- 2. every manifest, strictly --------------------------------------------

(($# > 0)) || set -- deploy/k8s
manifests=()
kustomizations=()
for arg in "$@"; do
    if [[ -d $arg ]]; then
        shopt -s nullglob
        files=("$arg"/*.yaml "$arg"/*.yml)
        shopt -u nullglob
    elif [[ -f $arg ]]; then
        files=("$arg")
    else
        die "$arg: no such file or directory"
    fi
    for f in "${files[@]}"; do
        case $(basename "$f") in
        kustomization.yaml | kustomization.yml) kustomizations+=("$f") ;;
        *) manifests+=("$f") ;;
        esac
    done
done
((${#manifests[@]})) || die "no manifests (*.yaml) in $*"

version_args=()
for v in "${VERSIONS[@]}"; do version_args+=(-k "$v"); done
status=0
output=$("$VENV/bin/kubernetes-validate" --strict "${version_args[@]}" "${manifests[@]}" 2>&1) || status=$?
printf '%s\n' "$output"
# The tool exits 0 when it has no schema for a kind (a misspelt apiVersion or kind):
# any warning fails the run.
if grep -q '^WARN' <<<"$output"; then
    status=1
    echo "k8s-validate.sh: warnings above count as failures (no schema: a wrong apiVersion or kind?)" >&2
fi
((status == 0)) || die "manifests did not validate (above)"

# ---- 3. what a schema cannot check ------------------------------------------

"$VENV/bin/python" - "${kustomizations[@]}" -- "${manifests[@]}" <<'PY' || die "consistency checks failed (above)"
import os
import re
import sys

import yaml

args = sys.argv[1:]
split = args.index("--")
kustomizations, manifests = args[:split], args[split + 1:]
errors = []


def seconds(text, where):
    m = re.fullmatch(r"(\d+)s", str(text).strip())
    if not m:
        errors.append(f"{where}: {text!r} is not whole seconds such as \"10s\"")
        return None
    return int(m.group(1))


for k in kustomizations:
    with open(k) as f:
        doc = yaml.safe_load(f)
    if doc.get("kind") != "Kustomization":
        errors.append(f"{k}: kind is {doc.get('kind')!r}, not Kustomization")
    base = os.path.dirname(k)
    listed = {os.path.normpath(os.path.join(base, r)) for r in doc.get("resources", [])}
    for r in sorted(listed):
        if not os.path.exists(r):
            errors.append(f"{k}: resource {r} does not exist")
    for m in manifests:
        m = os.path.normpath(m)
        if os.path.dirname(m) == os.path.normpath(base) and m not in listed \
                and ".example." not in os.path.basename(m):
            errors.append(f"{k}: {m} is not listed in resources (examples are named *.example.yaml)")

config = {}
deployments = []
for m in manifests:
    with open(m) as f:
        for doc in yaml.safe_load_all(f):
            if not doc:
                continue
            if doc.get("kind") == "ConfigMap":
                config.update(doc.get("data") or {})
            elif doc.get("kind") == "Deployment":
                deployments.append((m, doc))

drain = 10  # the hub's default http.shutdown_timeout (and its maximum)
if "SCOREHUB_HTTP__SHUTDOWN_TIMEOUT" in config:
    drain = seconds(config["SCOREHUB_HTTP__SHUTDOWN_TIMEOUT"], "SCOREHUB_HTTP__SHUTDOWN_TIMEOUT")
    if drain is not None and drain > 10:
        errors.append(f"SCOREHUB_HTTP__SHUTDOWN_TIMEOUT is {drain}s; the hub allows at most 10s")
for m, doc in deployments:
    pod = doc["spec"]["template"]["spec"]
    grace = pod.get("terminationGracePeriodSeconds", 30)
    for c in pod.get("containers", []):
        pre_stop = 0
        command = (((c.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command")
        if command and command[0] == "sleep":
            pre_stop = int(command[1])
        sleep_action = (((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {})
        pre_stop += int(sleep_action.get("seconds", 0))
        if drain is not None and grace < pre_stop + drain:
            errors.append(
                f"{m}: terminationGracePeriodSeconds {grace} < preStop {pre_stop}s + "
                f"drain {drain}s: the kubelet would SIGKILL {c['name']} mid-drain")
        else:
            print(f"{m}: {c['name']}: grace {grace}s >= preStop {pre_stop}s + drain {drain}s")

for e in errors:
    print(f"ERROR {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
echo "k8s-validate.sh: ${#manifests[@]} manifests valid against Kubernetes ${VERSIONS[*]}"
