"""Class priors live in a folder keyed by every input; identical inputs reuse it, any change does not."""

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
    assert (tmp_path / "b" / "prior").exists()


def test_any_changed_input_gives_a_new_folder(tmp_path):
    root = tmp_path / "priors"
    base = generate_priors("tiny-sd", "robot", PARAMS, 64, root, tmp_path / "view")
    changes = [
        ("tiny-sd", "robot", PARAMS.model_copy(update={"steps": 4}), 64),
        ("tiny-sd", "robot", PARAMS.model_copy(update={"seed": 5}), 64),
        ("tiny-sd", "robot", PARAMS.model_copy(update={"scheduler": "euler"}), 64),
        ("tiny-sd", "robot", PARAMS.model_copy(update={"negative_prompt": "blurry"}), 64),
        ("tiny-sd", "dog", PARAMS, 64),
        ("tiny-taiyi", "robot", PARAMS, 64),
        ("tiny-sd", "robot", PARAMS, 32),
    ]
    folders = {base.folder}
    for model, noun, params, res in changes:
        result = generate_priors(model, noun, params, res, root, tmp_path / "view")
        assert not result.reused
        folders.add(result.folder)
    assert len(folders) == len(changes) + 1


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
