"""Class priors live in a folder keyed by every input; identical inputs reuse it, any change does not."""

import shutil
import sys

import pytest
from safetensors.torch import load_file, save_file

from components import prior
from components.base_model import resolve_model
from components.config import PriorParams
from components.prior import generate_priors

PARAMS = PriorParams(num_images=3, steps=3, batch_size=2)


def test_generates_then_reuses_for_a_second_concept(tmp_path):
    first = generate_priors("tiny-sd", "robot", PARAMS, 64, tmp_path / "priors", tmp_path / "a" / "prior")
    folder = tmp_path / "priors" / first.folder
    images = sorted((folder / "images").iterdir())
    assert not first.reused and len(images) == 3
    assert [i.seed for i in first.images] == [0, 1, 2]
    mtimes = [p.stat().st_mtime_ns for p in images]

    second = generate_priors("tiny-sd", "robot", PARAMS, 64, tmp_path / "priors", tmp_path / "b" / "prior")

    assert second.reused and second.folder == first.folder
    assert [p.stat().st_mtime_ns for p in sorted((folder / "images").iterdir())] == mtimes
    # Each concept's view holds hard links to the shared images (the same files), not copies.
    for view in (tmp_path / "a" / "prior", tmp_path / "b" / "prior"):
        linked = sorted((view / "images").iterdir())
        assert [p.name for p in linked] == [p.name for p in images]
        assert all(v.stat().st_ino == s.stat().st_ino for v, s in zip(linked, images, strict=True))


def test_any_changed_input_gives_a_new_folder(tmp_path):
    root = tmp_path / "priors"
    model = tmp_path / "my-model"  # one model name (a local folder) whose weights change below
    shutil.copytree(resolve_model("tiny-sd"), model)
    base = generate_priors(str(model), "robot", PARAMS, 64, root, tmp_path / "view")

    def retrain_the_model():  # same name, other weights: what a fine-tuned checkpoint saved in place is
        weights = next((model / "unet").glob("*.safetensors"))
        tensors = load_file(weights)
        tensors = {k: (v + 0.01 if v.is_floating_point() else v) for k, v in tensors.items()}
        save_file(tensors, weights)

    changes = [
        (str(model), "robot", PARAMS.model_copy(update={"steps": 4}), 64),
        (str(model), "robot", PARAMS.model_copy(update={"seed": 5}), 64),
        (str(model), "robot", PARAMS.model_copy(update={"scheduler": "euler"}), 64),
        (str(model), "robot", PARAMS.model_copy(update={"negative_prompt": "blurry"}), 64),
        (str(model), "robot", PARAMS.model_copy(update={"guidance_scale": 3.0}), 64),
        (str(model), "robot", PARAMS.model_copy(update={"prompt": "a {class_noun}"}), 64),
        (str(model), "dog", PARAMS, 64),
        ("tiny-taiyi", "robot", PARAMS, 64),
        (str(model), "robot", PARAMS, 32),
        (retrain_the_model, None, None, None),
        (str(model), "robot", PARAMS, 64),  # the base inputs again, on the new weights
    ]
    folders = {base.folder}
    for name, noun, params, res in changes:
        if callable(name):
            name()
            continue
        result = generate_priors(name, noun, params, res, root, tmp_path / "view")
        assert not result.reused, (name, noun, params, res)
        folders.add(result.folder)
    assert len(folders) == len(changes)  # every generation (all but the weights edit) got its own folder


@pytest.mark.parametrize("module", ["components.prior", "components.generation", "components.base_model"])
def test_the_generating_code_is_part_of_the_key(tmp_path, monkeypatch, module):
    """An edit to the code that loads the model or draws the images gives a new folder, as DVC re-runs
    the stage after such an edit: the reference DreamBooth script would reuse the old images."""
    root = tmp_path / "priors"
    before = generate_priors("tiny-sd", "robot", PARAMS, 64, root, tmp_path / "view")
    edited = tmp_path / "edited.py"
    edited.write_text(open(sys.modules[module].__file__).read() + "\n# an edit\n")
    monkeypatch.setattr(sys.modules[module], "__file__", str(edited))

    after = generate_priors("tiny-sd", "robot", PARAMS, 64, root, tmp_path / "view")

    assert not after.reused and after.folder != before.folder
    assert after.inputs["code"]["sources"] != before.inputs["code"]["sources"]


def test_library_versions_are_part_of_the_key(monkeypatch):
    before = prior.prior_inputs("tiny-sd", "robot", PARAMS, 64)
    installed = prior.version
    monkeypatch.setattr(prior, "version", lambda lib: "9.9" if lib == "diffusers" else installed(lib))
    after = prior.prior_inputs("tiny-sd", "robot", PARAMS, 64)
    assert after["code"]["diffusers"] == "9.9" and after != before


def test_an_interrupted_folder_is_not_reused(tmp_path):
    root = tmp_path / "priors"
    done = generate_priors("tiny-sd", "robot", PARAMS, 64, root, tmp_path / "view")
    folder = root / done.folder
    (folder / "manifest.json").rename(folder.with_name(folder.name + ".partial-manifest"))  # as if cut short
    again = generate_priors("tiny-sd", "robot", PARAMS, 64, root, tmp_path / "view")
    assert not again.reused and (folder / "manifest.json").exists()


def test_seeded_per_image_so_batching_does_not_matter(tmp_path):
    import numpy as np
    from PIL import Image

    a = generate_priors(
        "tiny-sd", "robot", PARAMS.model_copy(update={"batch_size": 1}), 64, tmp_path / "a", tmp_path / "av"
    )
    b = generate_priors(
        "tiny-sd", "robot", PARAMS.model_copy(update={"batch_size": 3}), 64, tmp_path / "b", tmp_path / "bv"
    )
    for ia, ib in zip(a.images, b.images, strict=False):
        pa = np.asarray(Image.open(tmp_path / "a" / a.folder / ia.file), dtype=int)
        pb = np.asarray(Image.open(tmp_path / "b" / b.folder / ib.file), dtype=int)
        assert np.abs(pa - pb).max() <= 2
