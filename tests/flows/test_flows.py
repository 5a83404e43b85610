"""train_concept, promote and retrain under a Prefect test harness, on a temporary git + DVC copy of
the project, with a DVC remote and MLflow artifacts on an S3 endpoint over HTTP and a real MLflow
tracking server process."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from PIL import Image

from components.config import load_params
from components.promote import GATED, decide
from flows import dvc_repo
from flows.promote import promote
from flows.retrain import needs_training, retrain
from flows.train_concept import train_concept
from tests.conftest import FAST_FLOW_PARAMS, make_project_repo, run

pytestmark = pytest.mark.slow
STAGES = ["curate@toy-robot", "caption@toy-robot", "prior@toy-robot", "train@toy-robot", "evaluate@toy-robot"]


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def edit_params(repo, section, **values):
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def change_one_photo(repo):
    photo = repo / "concepts" / "toy-robot" / "photos" / "robot_03.jpg"
    img = np.asarray(Image.open(photo)).copy()
    img[10:40, 10:40] = [20, 200, 20]  # a green sticker on the robot's photo
    Image.fromarray(img).save(photo, quality=95)
    run(["dvc", "add", "-q", "concepts/toy-robot/photos"], repo)


@pytest.fixture
def repo(tmp_path, prefect_harness, flow_env, mlflow_server):
    repo = make_project_repo(tmp_path / "repo", FAST_FLOW_PARAMS)
    run(["dvc", "remote", "add", "-d", "team", "s3://dvc-store/conceptlab"], repo)
    run(["dvc", "remote", "modify", "team", "endpointurl", flow_env.meta.endpoint_url], repo)
    run(["git", "commit", "-qam", "S3 remote (credentials come from the environment)"], repo)
    return repo


def test_train_promote_rerun_pull_and_retrain(repo, tmp_path, s3_env, mlflow_server):
    client = MlflowClient(tracking_uri=mlflow_server)

    # 1. First run: every stage runs, outputs go to S3, v1 is registered and gated against the base.
    first = train_concept("toy-robot", repo=str(repo))
    assert first["ran"] == STAGES
    assert first["registration"]["version"] == "1"
    verdict = promote("toy-robot", repo=str(repo))
    assert verdict["reference"] == "base"
    version = client.get_model_version("toy-robot", "1")
    assert version.tags["gate.verdict"] == ("passed" if verdict["passed"] else "refused")
    run_tags = client.get_run(version.run_id).data.tags
    lock = dvc_repo.lock_hashes(repo, "toy-robot")
    assert run_tags["conceptlab.dvc.train.adapter.md5"] == lock["dvc.train.adapter.md5"] != ""
    assert run_tags["conceptlab.prefect_flow_run_id"]
    assert "AWS_SECRET_ACCESS_KEY" not in str(client.get_run(version.run_id).data.params)
    artifact_uri = client.get_run(version.run_id).info.artifact_uri
    assert artifact_uri.startswith("mlflow-artifacts:")
    mlflow_objects = s3_env.list_objects_v2(Bucket="mlflow-artifacts").get("Contents", [])
    assert any(o["Key"].endswith("pytorch_lora_weights.safetensors") for o in mlflow_objects)
    dvc_objects = [o["Key"] for o in s3_env.list_objects_v2(Bucket="dvc-store").get("Contents", [])]
    adapter_md5 = lock["dvc.train.adapter.md5"].removesuffix(".dir")
    assert any(adapter_md5[2:] in key for key in dvc_objects), "the adapter's DVC object is on S3"

    # 2. Nothing changed: DVC skips every stage and no version is added.
    second = train_concept("toy-robot", repo=str(repo))
    assert second["ran"] == [] and second["skipped"] == STAGES
    assert len(client.search_model_versions("name = 'toy-robot'")) == 1

    # Changing only an evaluation param makes only the evaluate stage stale; a training param, train onward.
    original = (repo / "params.yaml").read_text()
    edit_params(repo, "evaluate", guidance_scale=6.5)
    assert dvc_repo.changed_stages(repo, "toy-robot") == ["evaluate@toy-robot"]
    (repo / "params.yaml").write_text(original)
    edit_params(repo, "train", rank=4)
    assert dvc_repo.changed_stages(repo, "toy-robot") == [
        "train@toy-robot"
    ]  # evaluate follows when its adapter changes
    (repo / "params.yaml").write_text(original)
    assert dvc_repo.changed_stages(repo, "toy-robot") == []

    # 3. A fresh clone of this git revision pulls the exact data and adapter from S3.
    assert run(["git", "status", "--porcelain", "dvc.lock"], repo) == "", "the flow committed dvc.lock"
    assert "conceptlab: reproduce toy-robot" in run(["git", "log", "--oneline", "-3"], repo)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    run(["dvc", "pull", "-q"], clone)
    adapter = "work/toy-robot/adapter/pytorch_lora_weights.safetensors"
    assert sha(clone / adapter) == sha(repo / adapter)
    for photo in (repo / "concepts/toy-robot/photos").iterdir():
        assert sha(clone / "concepts/toy-robot/photos" / photo.name) == sha(photo)
    assert sorted(p.name for p in (clone / "work/toy-robot/prior/images").iterdir()) == sorted(
        p.name for p in (repo / "work/toy-robot/prior/images").iterdir()
    )

    # 4. retrain with nothing changed leaves the concept alone (when it has a champion).
    if verdict["promoted"]:
        assert retrain(repo=str(repo))["toy-robot"]["retrained"] is False

    # retrain's selection with two concepts: a new one (never reproduced) is due, the unchanged one is not.
    shutil.copytree(
        repo / "concepts" / "toy-robot", repo / "concepts" / "toy-dog", ignore=shutil.ignore_patterns("*.dvc")
    )
    concept_file = repo / "concepts" / "toy-dog" / "concept.yaml"
    concept_file.write_text(concept_file.read_text().replace("name: toy-robot", "name: toy-dog"))
    original = (repo / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["concepts"] = ["toy-robot", "toy-dog"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert needs_training.fn(str(repo), "toy-dog")[0] is True
    if verdict["promoted"]:
        assert needs_training.fn(str(repo), "toy-robot") == (False, "unchanged since champion v1")
    (repo / "params.yaml").write_text(original)
    shutil.rmtree(repo / "concepts" / "toy-dog")

    # 5. A changed photo: retrain picks the concept, curate onward runs, v2 is gated by its numbers.
    # ... together with an evaluation setting, so the champion's numbers are not comparable as they are:
    # the gate evaluates the champion's adapter again with the new settings before comparing.
    change_one_photo(repo)
    edit_params(repo, "evaluate", guidance_scale=6.0)
    result = retrain(repo=str(repo))["toy-robot"]
    assert result["retrained"] and result["ran"] == [s for s in STAGES if not s.startswith("prior")]
    v2 = client.get_model_version("toy-robot", "2")
    tags = v2.tags
    challenger = {k: float(tags[f"gate.challenger.{k}"]) for k in GATED}
    reference = {k: float(tags[f"gate.reference.{k}"]) for k in GATED}
    rule = load_params(repo / "params.yaml").promotion
    expected = all(c.passed for c in decide(challenger, reference, rule))
    assert tags["gate.verdict"] == ("passed" if expected else "refused")
    champion = (
        client.get_model_version_by_alias("toy-robot", "champion").version
        if (expected or verdict["promoted"])
        else None
    )
    if expected:
        assert str(champion) == "2"
    if verdict["promoted"]:  # v1 was champion: it was re-evaluated with guidance 6.0
        assert tags["gate.reference"] == "champion v1"
        reeval = json.loads((repo / "work/toy-robot/champion-reeval/metrics.json").read_text())
        assert reeval["settings"]["guidance_scale"] == 6.0
        assert float(tags["gate.reference.clip_i"]) == pytest.approx(reeval["metrics"]["clip_i"], abs=1e-6)


def test_a_failed_stage_registers_nothing(repo, mlflow_server):
    client = MlflowClient(tracking_uri=mlflow_server)

    def versions():
        names = [m.name for m in client.search_registered_models()]
        return len(client.search_model_versions("name = 'toy-robot'")) if "toy-robot" in names else 0

    before = versions()
    shutil.rmtree(repo / "concepts" / "toy-robot" / "photos")
    (repo / "concepts" / "toy-robot" / "photos").mkdir()
    (repo / "concepts" / "toy-robot" / "photos" / "notes.txt").write_text("no photos here")
    with pytest.raises(dvc_repo.DvcError, match="only 0 photo"):
        train_concept("toy-robot", repo=str(repo))
    assert versions() == before, "no version from the failed run"
    assert not (repo / "work" / "toy-robot" / "adapter").exists()
