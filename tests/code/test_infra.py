"""infra/ cannot run here (no container runtime, no cluster), so its files are checked for what can be
read: they parse, agree on names, and hand every flow run the settings prefect.yaml and the flows read."""

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"


def k8s_objects(path: Path) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(path.read_text()) if o}


def prefect_env_placeholders() -> set[str]:
    """Environment variables prefect.yaml's steps read at run time (`{{ $NAME }}`)."""
    return set(re.findall(r"\{\{\s*\$(\w+)\s*\}\}", (ROOT / "prefect.yaml").read_text()))


def test_every_flow_run_gets_the_settings_prefect_yaml_and_the_flows_read():
    needed = prefect_env_placeholders()
    assert "CONCEPTLAB_GIT_URL" in needed
    compose = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
    worker_env = compose["services"]["worker"]["environment"]
    flows_read = {"PREFECT_API_URL", "MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID"}
    assert needed | flows_read <= set(worker_env), "the compose worker's flow runs"
    env_example = dict(line.split("=", 1) for line in (INFRA / ".env.example").read_text().split())
    assert set(re.findall(r"\$\{(\w+)", (INFRA / "docker-compose.yml").read_text())) <= set(env_example)

    # Kubernetes Jobs: the worker injects PREFECT_API_URL; the rest comes from the ConfigMap and Secret.
    pool = json.loads((INFRA / "k8s" / "gpu-work-pool.json").read_text())["job_configuration"]
    container = pool["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    sources = {next(iter(ref)): ref[next(iter(ref))]["name"] for ref in container["envFrom"]}
    config = k8s_objects(INFRA / "k8s" / "prerequisites.yaml")[("ConfigMap", sources["configMapRef"])]
    assert (needed | {"MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL"}) <= set(config["data"])
    readme = (INFRA / "README.md").read_text()
    assert all(name in readme for name in needed), "each setting is documented"


def test_kubernetes_names_agree():
    prerequisites = k8s_objects(INFRA / "k8s" / "prerequisites.yaml")
    worker = k8s_objects(INFRA / "k8s" / "worker.yaml")
    pool = json.loads((INFRA / "k8s" / "gpu-work-pool.json").read_text())["job_configuration"]
    job = pool["job_manifest"]
    namespace = pool["namespace"]
    assert ("Namespace", namespace) in prerequisites
    assert job["metadata"]["namespace"] == namespace
    assert {
        o["metadata"]["namespace"] for o in [*worker.values(), *prerequisites.values()] if o["kind"] != "Namespace"
    } == {namespace}
    spec = job["spec"]["template"]["spec"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
    assert {("PersistentVolumeClaim", c) for c in claims} <= set(prerequisites)
    secret = next(r["secretRef"]["name"] for r in spec["containers"][0]["envFrom"] if "secretRef" in r)
    assert not any(kind == "Secret" for kind, _ in [*prerequisites, *worker]), "secrets stay out of tracked files"
    assert f"create secret generic {secret}" in (INFRA / "k8s" / "prerequisites.yaml").read_text()
    assert secret in (INFRA / "README.md").read_text()

    container = worker[("Deployment", "prefect-worker-gpu")]["spec"]["template"]["spec"]["containers"][0]
    api_url = next(e["value"] for e in container["env"] if e["name"] == "PREFECT_API_URL")
    host = re.match(r"https?://([^:/]+)", api_url).group(1)
    service, service_namespace = host.split(".")[:2]
    assert ("Service", service) in prerequisites and service_namespace == namespace
    pools = {d["work_pool"]["name"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    assert container["command"][container["command"].index("--pool") + 1] in pools


def test_work_pool_setup_commands_can_run_again():
    script = (INFRA / "team.sh").read_text().replace("\\\n", " ")  # `infra/team.sh deploy`; one line per command
    creates = [line for line in script.splitlines() if "prefect work-pool create" in line and "uv run" in line]
    pools = {d["work_pool"]["name"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    assert {line.split("work-pool create ")[1].split()[0] for line in creates} == pools
    assert all("--overwrite" in line for line in creates), "the compose worker creates conceptlab-cpu first"


def test_image_holds_the_environment_not_the_code():
    dockerfile = (INFRA / "Dockerfile").read_text()
    copied = [line.split()[1:-1] for line in dockerfile.splitlines() if line.startswith("COPY")]
    assert sorted(name for names in copied for name in names) == ["pyproject.toml", "uv.lock"]
    assert "uv sync --frozen --no-dev ${EXTRAS} --no-install-project" in dockerfile
    assert '--build-arg EXTRAS="--extra gpu"' in dockerfile, "GPU images carry the locked gpu extra"
    env = re.search(r"UV_PROJECT_ENVIRONMENT=(\S+)", dockerfile).group(1)
    assert env == "/opt/conceptlab/.venv" and f"PATH={env}/bin:" in dockerfile, (
        "pull-step syncs land in the image's env"
    )
    pull = yaml.safe_load((ROOT / "prefect.yaml").read_text())["pull"]
    script = next(
        s["prefect.deployments.steps.run_shell_script"]["script"]
        for s in pull
        if "prefect.deployments.steps.run_shell_script" in s
    )
    assert script.splitlines()[0] == "uv sync --frozen --no-dev --inexact", (
        "the same groups as the image, nothing to download; --inexact keeps the image's extras"
    )


def test_training_jobs_get_a_gpu_per_training_process():
    """train.num_processes > 1 runs one process per GPU (NCCL): the Job asks for `gpus` GPUs, documented as
    train.num_processes, and a RAM-backed /dev/shm (NCCL's shared memory; a container's default is 64 MB)."""
    pool = json.loads((INFRA / "k8s" / "gpu-work-pool.json").read_text())
    spec = pool["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpus }}"
    assert "train.num_processes" in pool["variables"]["properties"]["gpus"]["description"]
    shm = next(m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm")
    assert next(v for v in spec["volumes"] if v["name"] == shm)["emptyDir"]["medium"] == "Memory"
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert pool["variables"]["properties"]["gpus"]["default"] == params["train"]["num_processes"]
    readme = (INFRA / "README.md").read_text()
    assert "--job-variable gpus=" in readme and "train.num_processes" in readme


SECRET_NAME = re.compile(r"PASSWORD|SECRET|AUTH_STRING|_KEY$")
FROM_ENV = re.compile(r"^\$\{\w+:\?[^}]*\}$")  # ${NAME:?message}: compose refuses to start while it is unset


def test_compose_ships_with_authentication_on_and_secrets_only_by_reference():
    services = yaml.safe_load((INFRA / "docker-compose.yml").read_text())["services"]
    assert services["prefect-server"]["environment"]["PREFECT_SERVER_API_AUTH_STRING"]
    assert "--app-name basic-auth" in " ".join(services["mlflow"]["command"])
    mlflow_env = services["mlflow"]["environment"]
    assert {"MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_CHAMPION_SETTERS"} <= set(
        mlflow_env
    )
    assert (
        mlflow_env["MLFLOW_CHAMPION_SETTERS"] == "gate" == services["worker"]["environment"]["MLFLOW_TRACKING_USERNAME"]
    )
    assert {"PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_PASSWORD"} <= set(services["worker"]["environment"])
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert FROM_ENV.match(str(value)), f"{name}: {key} must be ${{VAR:?...}} from infra/.env, not {value!r}"
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback (TLS proxy in front)"
    env_example = dict(line.split("=", 1) for line in (INFRA / ".env.example").read_text().split())
    assert all(value == "" for key, value in env_example.items() if SECRET_NAME.search(key)), "no sample secrets"


def test_kubernetes_credentials_come_from_the_secret_only():
    pool = json.loads((INFRA / "k8s" / "gpu-work-pool.json").read_text())["job_configuration"]
    container = pool["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    secret = next(r["secretRef"]["name"] for r in container["envFrom"] if "secretRef" in r)
    worker = k8s_objects(INFRA / "k8s" / "worker.yaml")[("Deployment", "prefect-worker-gpu")]
    env = {e["name"]: e for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PREFECT_API_AUTH_STRING"]["valueFrom"]["secretKeyRef"]["name"] == secret
    recipe = (INFRA / "k8s" / "prerequisites.yaml").read_text()
    for key in ("PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_USERNAME=training", "MLFLOW_TRACKING_PASSWORD="):
        assert f"--from-literal={key}" in recipe, f"the Secret recipe sets {key}"
    for path in (INFRA / "k8s").iterdir():
        docs = [json.loads(path.read_text())] if path.suffix == ".json" else list(yaml.safe_load_all(path.read_text()))
        literal = [
            e["name"]
            for e in _env_entries(docs)
            if SECRET_NAME.search(e.get("name", "")) and "value" in e and "valueFrom" not in e
        ]
        assert not literal, f"{path.name}: {literal} must come from the Secret"
        config_maps = [d for d in docs if isinstance(d, dict) and d.get("kind") == "ConfigMap"]
        assert not any(SECRET_NAME.search(k) for d in config_maps for k in d["data"]), (
            f"{path.name}: secret in a ConfigMap"
        )


def _env_entries(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, list):
                yield from (e for e in value if isinstance(e, dict))
            else:
                yield from _env_entries(value)
    elif isinstance(node, list):
        for item in node:
            yield from _env_entries(item)


def test_team_servers_require_credentials_unless_explicitly_off():
    script = (INFRA / "team.sh").read_text()
    assert "--app-name basic-auth" in script and "need PREFECT_SERVER_API_AUTH_STRING" in script
    assert "CONCEPTLAB_AUTH:-on" in script, "authentication is the default"
    template = (INFRA / "mlflow_auth" / "basic_auth.ini.template").read_text()
    assert "authorization_function = conceptlab_mlflow_auth:authenticate" in template
    assert "default_permission = READ" in template and "admin_password" not in template


def test_team_servers_refuse_to_start_without_credentials():
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "CONCEPTLAB_AUTH"))}
    env["PATH"] = "/usr/bin:/bin"  # no `uv`: were the check missing, the server would fail to start, not run
    for server, variable in (
        ("prefect-server", "PREFECT_SERVER_API_AUTH_STRING"),
        ("mlflow-server", "MLFLOW_AUTH_ADMIN_PASSWORD"),
    ):
        proc = subprocess.run([str(INFRA / "team.sh"), server], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and variable in proc.stderr, (server, proc.stderr)
