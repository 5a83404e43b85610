"""A real MLflow registry (SQLite) holding two versions of the toy-world concept, made by the
project's own stages: curate, caption, class priors, train, evaluate, register, and the gate.

Sized to take about a minute on 2 cores: few prior images, short trainings, two seeds. Version 1 is
gated against the base model and becomes the champion (the gate writes its verdict as version tags);
version 2 is the challenger, registered after it, and is refused against version 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from components.config import deep_merge, load_config
from components.layout import ConceptLayout

ROOT = Path(__file__).resolve().parents[2]
CONCEPT = "toy-purple-triangle"
FAST = {
    "prior": {"num_images": 8, "steps": 10, "batch_size": 8},
    "train": {"max_steps": 30, "checkpoint_every": 1000, "learning_rate": 0.003},
    "evaluate": {"seeds": [0, 1], "steps": 10},
}
# v1 learns the concept; v2 is a deliberately worse challenger (learning rate 0: B stays 0, so it draws
# exactly what the base model draws), which the gate refuses against v1.
TRAININGS = ({"seed": 0}, {"seed": 1, "learning_rate": 0.0, "max_steps": 10})
# 30 steps at a high learning rate drift more than the calibrated 200-step default: a looser drift bound,
# so v1 passes against the base model (the gate's rule itself is tested in tests/model/test_promote.py).
RULE = {"max_prior_drift": 0.6}


@dataclass
class ToyRegistry:
    tracking_uri: str
    concept: str
    versions: list[str]
    work_dir: Path


def fill_registry(work_dir: Path) -> ToyRegistry:
    from mlflow import MlflowClient

    from components.config import PromotionParams
    from components.pipeline import run_caption, run_curate, run_evaluate, run_prior, run_register, run_train
    from components.promote import promote

    work_dir.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work_dir / 'mlflow.db'}"
    # Artifacts inside work_dir too (MLflow's default is ./mlruns of the working directory).
    MlflowClient(tracking_uri=uri).create_experiment("conceptlab", artifact_location=(work_dir / "artifacts").as_uri())
    params = deep_merge(yaml.safe_load((ROOT / "params.yaml").read_text()), FAST)
    params["registry"].update(tracking_uri=uri, experiment="conceptlab")
    params_file = work_dir / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    cfg = load_config(ROOT / "concepts" / CONCEPT / "concept.yaml", params_file)
    layout = ConceptLayout(work_dir / "work", CONCEPT)
    run_curate(cfg, layout)
    run_caption(cfg, layout)
    run_prior(cfg, layout)
    versions = []
    for training in TRAININGS:
        train = cfg.params.train.model_copy(update=training)
        step_cfg = cfg.model_copy(update={"params": cfg.params.model_copy(update={"train": train})})
        run_train(step_cfg, layout)
        run_evaluate(step_cfg, layout)
        versions.append(run_register(step_cfg, layout).version)
        promote(CONCEPT, uri, PromotionParams(**{**params["promotion"], **RULE}))
    return ToyRegistry(uri, CONCEPT, versions, work_dir)
