#!/usr/bin/env bash
# dfsearch container entrypoint.
#   head            start the Ray head node (GCS on $RAY_PORT, dashboard on 8265) and stay in the foreground
#   worker          join the head at $RAY_HEAD_ADDRESS (host:port) with this machine's GPUs, stay in the foreground
#   run SPACE ...   run a sweep on the cluster this container belongs to (python -m dfsearch.run SPACE --address auto ...)
#   prepare ROOT .. detect faces / build the clip cache (python -m dfsearch.prepare ROOT ...)
#   mlflow          an MLflow tracking server on :$MLFLOW_PORT (5000) that also serves the artifacts:
#                   runs in $MLFLOW_BACKEND_STORE_URI (e.g. postgresql://user:pw@postgres:5432/mlflow; default
#                   SQLite under $MLFLOW_HOME), artifacts in $MLFLOW_ARTIFACTS_DESTINATION ($MLFLOW_HOME/artifacts)
#   anything else   executed as given
# Extra `ray start` flags: $RAY_START_ARGS (e.g. "--num-cpus=8 --num-gpus=4").
set -euo pipefail

RAY_PORT="${RAY_PORT:-6379}"
# Token authentication: every node and client of a cluster needs the same token (RAY_AUTH_TOKEN, or the file
# ~/.ray/auth_token that `ray get-auth-token --generate` writes). With a token present, use it everywhere,
# including our own `ray status` checks, which otherwise fail against a token-protected head.
if [ -z "${RAY_AUTH_MODE:-}" ] && { [ -n "${RAY_AUTH_TOKEN:-}" ] || [ -f "$HOME/.ray/auth_token" ]; }; then
  export RAY_AUTH_MODE=token
fi
role="${1:-help}"
[ $# -gt 0 ] && shift

# `ray start` returns once the node is up; we then wait on it so the container lives as long as the node,
# and `ray stop` on SIGTERM so `docker compose down` leaves no half-registered node behind.
hold() {
  trap 'ray stop --force >/dev/null 2>&1; exit 0' TERM INT
  while ray status --address "$1" >/dev/null 2>&1; do sleep 10 & wait $!; done
  echo "entrypoint: the Ray node at $1 is gone" >&2
  exit 1
}

case "$role" in
  head)
    # shellcheck disable=SC2086
    ray start --head --port="$RAY_PORT" --dashboard-host=0.0.0.0 --disable-usage-stats ${RAY_START_ARGS:-} "$@"
    [ "${DFSEARCH_DETACH:-0}" = 1 ] && exit 0
    hold "127.0.0.1:$RAY_PORT"
    ;;
  worker)
    : "${RAY_HEAD_ADDRESS:?set RAY_HEAD_ADDRESS=host:port of the Ray head}"
    for _ in $(seq 1 60); do  # the head may still be starting
      ray status --address "$RAY_HEAD_ADDRESS" >/dev/null 2>&1 && break
      sleep 2
    done
    # shellcheck disable=SC2086
    ray start --address="$RAY_HEAD_ADDRESS" --disable-usage-stats ${RAY_START_ARGS:-} "$@"
    [ "${DFSEARCH_DETACH:-0}" = 1 ] && exit 0
    hold "$RAY_HEAD_ADDRESS"
    ;;
  run)
    exec python -m dfsearch.run "$@" --address "${RAY_ADDRESS:-auto}"
    ;;
  prepare)
    exec python -m dfsearch.prepare "$@"
    ;;
  mlflow)
    home="${MLFLOW_HOME:-/mlflow}"
    artifacts="${MLFLOW_ARTIFACTS_DESTINATION:-$home/artifacts}"
    case "$artifacts" in *://*) ;; *) mkdir -p "$artifacts" ;; esac
    # Clients reach it as http://mlflow:5000 (other containers) or through an SSH tunnel (localhost): MLflow's
    # DNS-rebinding guard accepts only the Host headers listed here.
    port="${MLFLOW_PORT:-5000}"
    exec mlflow server --host "${MLFLOW_HOST:-0.0.0.0}" --port "$port" \
      --backend-store-uri "${MLFLOW_BACKEND_STORE_URI:-sqlite:///$home/mlflow.db}" \
      --serve-artifacts --artifacts-destination "$artifacts" \
      --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-mlflow,mlflow:$port,localhost,localhost:$port,127.0.0.1,127.0.0.1:$port}" "$@"
    ;;
  help|-h|--help)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
