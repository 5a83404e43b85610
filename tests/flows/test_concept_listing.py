"""Any concept folder runs through the flows: dvc.yaml loops over params.yaml `concepts`, and the demo
lists a concept there before `dvc repro`."""

import difflib
import shutil

import pytest

from components.config import load_params
from flows import dvc_repo
from flows.common import list_concept
from tests.conftest import FAST_FLOW_PARAMS, ROOT, make_project_repo


def test_listing_a_concept_changes_one_line_of_params_yaml(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    before = (tmp_path / "params.yaml").read_text()
    listed = load_params(tmp_path / "params.yaml").concepts
    assert "toy-white-diamond" not in listed

    assert list_concept(tmp_path, "toy-white-diamond") is True
    assert list_concept(tmp_path, "toy-white-diamond") is False, "listed once"

    after = (tmp_path / "params.yaml").read_text()
    changes = [d for d in difflib.ndiff(before.splitlines(), after.splitlines()) if d[:2] in ("+ ", "- ")]
    assert changes == ["+   - toy-white-diamond"], "comments, quotes and layout are kept"
    assert load_params(tmp_path / "params.yaml").concepts == [*listed, "toy-white-diamond"]


def test_an_unlisted_concept_folder_resolves_in_dvc_once_listed(tmp_path):
    repo = make_project_repo(tmp_path / "repo", {**FAST_FLOW_PARAMS, "concepts": []}, track_photos_with_dvc=False)
    with pytest.raises(dvc_repo.DvcError, match="not found inside 'dvc.yaml'"):
        dvc_repo.changed_stages(repo, "toy-robot")  # what `demo --concept toy-robot` ran into before

    assert list_concept(repo, "toy-robot")

    # `dvc status evaluate@toy-robot --with-deps` resolves every stage of the concept (none has run yet).
    assert dvc_repo.changed_stages(repo, "toy-robot") == sorted(f"{s}@toy-robot" for s in dvc_repo.STAGES)
