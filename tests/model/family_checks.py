"""The end-to-end check every family passes: train, load, evaluate, register, serve (issue 14's a-d)."""

import io
import json

import mlflow
import numpy as np
from PIL import Image

from components.base_model import load_pipeline, resolve_model
from components.families import family_for
from components.pipeline import run_caption, run_curate, run_evaluate, run_prior, run_register, run_train


def trained_adapter_loads_evaluates_registers_and_predicts(cfg, layout, render, prompt: str) -> None:
    """``cfg`` already points at the family's tiny model; ``render(pipe)`` makes a seeded image array."""
    for stage in (run_curate, run_caption, run_prior, run_train):
        stage(cfg, layout)
    family = family_for(resolve_model(cfg.concept.base_model))
    assert json.loads((layout.adapter / "train_config.json").read_text())["family"] == family.name

    pipe = load_pipeline(cfg.concept.base_model)
    base = render(pipe)
    pipe.load_lora_weights(layout.adapter)  # (a) the family pipeline's own loader
    assert np.abs(render(pipe) - base).max() > 1e-4, "(b) the trained adapter changes the output"

    evaluation = run_evaluate(cfg, layout)  # (d)
    assert evaluation.metrics["prior_drift"] > 0
    registered = run_register(cfg, layout)
    mlflow.set_tracking_uri(cfg.params.registry.tracking_uri)
    served = mlflow.pyfunc.load_model(registered.model_uri)
    out = served.predict({"prompt": [prompt]}, params={"num_inference_steps": 2})
    assert Image.open(io.BytesIO(out[0])).size == (64, 64)
    assert type(served.get_raw_model()).__name__ == family.pipeline, "the pyfunc serves the family's pipeline"
