"""Captions a person edited survive `dvc repro` (DVC keeps the `persist` output; the caption stage keeps
the edit), also when a new photo makes curate run again."""

import random

from components.io import read_json
from components.samples import draw_robot
from flows.dvc_repo import dvc
from tests.conftest import FAST_FLOW_PARAMS, make_project_repo

EDIT = "a photo of sks robot waving, studio light"


def test_an_edited_caption_survives_dvc_repro(tmp_path):
    repo = make_project_repo(tmp_path / "repo", FAST_FLOW_PARAMS, track_photos_with_dvc=False)
    captions = repo / "work" / "toy-robot" / "captions"
    dvc(repo, "repro", "-q", "caption@toy-robot")
    first = read_json(captions / "captions.json")["entries"]
    target = next(e for e in first if "robot-03" in e["image"])
    (captions / target["caption_file"]).write_text(EDIT + "\n")

    def edited_entry():
        entries = read_json(captions / "captions.json")["entries"]
        mine = [e for e in entries if e["sha256"] == target["sha256"]]
        assert len(mine) == 1 and mine[0]["edited_by_person"] and mine[0]["caption"] == EDIT
        assert (captions / mine[0]["caption_file"]).read_text().strip() == EDIT
        return entries

    # The edited output is what DVC sees changed: the caption stage runs and keeps the edit.
    out = dvc(repo, "repro", "caption@toy-robot")
    assert "Running stage 'caption@toy-robot'" in out
    assert len(edited_entry()) == 6
    # A new photo that sorts first: curate runs again, and the edit stays with its photo.
    photos = repo / "concepts" / "toy-robot" / "photos"
    draw_robot(96, random.Random(99), (250, 250, 250)).save(photos / "aaa_new.jpg", quality=95)
    out = dvc(repo, "repro", "caption@toy-robot")
    assert "Running stage 'curate@toy-robot'" in out and "Running stage 'caption@toy-robot'" in out
    assert len(edited_entry()) == 7
    assert "didn't change" in dvc(repo, "repro", "caption@toy-robot"), "and the edit is what DVC recorded"
