"""`conceptlab run` on the flow-matching families' tiny models, with nothing but base_model changed."""

import pytest
from typer.testing import CliRunner

from components.cli import app


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny-flux", "tiny-sd3"])
def test_run_trains_evaluates_and_registers_on_a_flow_model(model, concept_dir, params_file, tmp_path):
    concept = concept_dir / "concept.yaml"
    concept.write_text(concept.read_text().replace("base_model: tiny-sd", f"base_model: {model}"))
    args = ["run", str(concept), "--params", str(params_file), "--work-dir", str(tmp_path / "work")]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "done train" in result.output and "done evaluate" in result.output
    assert "registry: models:/toy-robot@challenger = toy-robot v1" in result.output
