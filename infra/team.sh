#!/usr/bin/env bash
# The team's services and deployments, one subcommand each, in the order infra/README.md shows them.
# Settings come from the environment (infra/.env.example names them); the test that runs the whole
# topology on loopback (tests/team/test_team.py) runs exactly these subcommands.
set -euo pipefail
cd "$(dirname "$0")/.."

# Both servers require credentials unless CONCEPTLAB_AUTH=off (a throwaway server on loopback only).
need() { [ "${CONCEPTLAB_AUTH:-on}" = off ] || [ -n "${!1:-}" ] || { echo "team.sh: set $1 ($2), or CONCEPTLAB_AUTH=off" >&2; exit 2; }; }

case "${1:-}" in
  prefect-server)  # API + UI on PREFECT_SERVER_API_HOST:PREFECT_SERVER_API_PORT (default 127.0.0.1:4200);
                   # its database: PREFECT_API_DATABASE_CONNECTION_URL (postgresql+asyncpg://...);
                   # clients and workers send PREFECT_API_AUTH_STRING, the same user:password
    need PREFECT_SERVER_API_AUTH_STRING "user:password the API requires"
    exec uv run --frozen prefect server start
    ;;
  mlflow-server)   # runs and registry in MLFLOW_BACKEND_STORE_URI (postgresql://...); artifacts proxied
                   # to MLFLOW_ARTIFACTS_DESTINATION (s3://...), so clients need no S3 credentials
    export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"  # 7 idle consumers otherwise
    auth=()
    if [ "${CONCEPTLAB_AUTH:-on}" != off ]; then  # MLflow's basic-auth app + the champion rule (infra/mlflow_auth)
      need MLFLOW_AUTH_ADMIN_PASSWORD "the admin created on first start"
      need MLFLOW_FLASK_SERVER_SECRET_KEY "CSRF key, the same on every MLflow server"
      need MLFLOW_CHAMPION_SETTERS "the gate's user name(s): the only ones that may move champion"
      export MLFLOW_AUTH_DATABASE_URI="${MLFLOW_AUTH_DATABASE_URI:-$MLFLOW_BACKEND_STORE_URI}"  # users and grants
      MLFLOW_AUTH_CONFIG_PATH="$(umask 077; mktemp "${TMPDIR:-/tmp}/mlflow-auth.XXXXXX.ini")"
      export MLFLOW_AUTH_CONFIG_PATH PYTHONPATH="$PWD/infra/mlflow_auth${PYTHONPATH:+:$PYTHONPATH}"
      uv run --frozen python -c 'import os, string, sys; sys.stdout.write(string.Template(open(sys.argv[1]).read()).substitute(os.environ))' \
        infra/mlflow_auth/basic_auth.ini.template > "$MLFLOW_AUTH_CONFIG_PATH"
      auth=(--app-name basic-auth)
    fi
    exec uv run --frozen mlflow server --host "${MLFLOW_HOST:-127.0.0.1}" --port "${MLFLOW_PORT:-5000}" \
      --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
      --workers "${MLFLOW_WORKERS:-1}" "${auth[@]}"
    ;;
  mlflow-users)    # as the admin (MLFLOW_TRACKING_USERNAME/PASSWORD): users viewer, training, gate and their
                   # roles; passwords from MLFLOW_{VIEWER,TRAINING,GATE}_PASSWORD; can run again
    exec uv run --frozen python infra/mlflow_auth/provision.py
    ;;
  deploy)          # work pools, concurrency limits, then prefect.yaml's deployments; each can run again
    uv run --frozen prefect work-pool create conceptlab-cpu --type process --overwrite
    if [ "${CONCEPTLAB_GPU_POOL_TYPE:-kubernetes}" = kubernetes ]; then
      uv run --frozen prefect work-pool create conceptlab-gpu --type kubernetes \
        --base-job-template infra/k8s/gpu-work-pool.json --overwrite
    else           # one machine with its GPUs: a process pool
      uv run --frozen prefect work-pool create conceptlab-gpu --type "$CONCEPTLAB_GPU_POOL_TYPE" --overwrite
    fi
    # No dvc-repo limit: each flow run has a clone of its own (a server-wide one would serialise retrain's fan-out)
    uv run --frozen prefect concurrency-limit create gpu "${CONCEPTLAB_GPUS:-1}"  # trainings at once, server-wide
    uv run --frozen prefect --no-prompt deploy --all
    ;;
  worker)          # a process worker on pool $2; each flow run clones CONCEPTLAB_GIT_URL (prefect.yaml pull
                   # steps) and syncs that revision into UV_PROJECT_ENVIRONMENT, the worker's environment
    exec uv run --frozen --no-dev prefect worker start --pool "${2:?usage: team.sh worker <pool> [--limit N]}" "${@:3}"
    ;;
  *)
    echo "usage: infra/team.sh prefect-server | mlflow-server | mlflow-users | deploy | worker <pool> [--limit N]" >&2
    exit 2
    ;;
esac
