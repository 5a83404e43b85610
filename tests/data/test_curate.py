"""curate on bad and unusual inputs: every file is listed, each rejection with its reason."""

import hashlib
import io
import shutil
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from components.config import CurateParams
from components.curate import CurateResult, curate
from components.errors import NotEnoughImages
from components.samples import write_sample_photos

PARAMS = CurateParams(min_side=64, min_images=1, near_duplicate_distance=4)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A valid tiny PNG whose header claims width x height pixels."""
    data = png_bytes(Image.new("L", (1, 1)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return data[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


def by_source(result):
    return {e.source: e for e in result.entries}


@pytest.fixture
def good(tmp_path) -> list[Path]:
    return write_sample_photos(tmp_path / "good", count=4, size=96)


def test_every_rejection_reason_is_listed(tmp_path, good):
    src = tmp_path / "photos"
    src.mkdir()
    for p in good:
        shutil.copy(p, src / p.name)
    shutil.copy(good[0], src / "zz_copy_of_first.jpg")  # exact duplicate
    Image.open(good[1]).resize((90, 90)).save(src / "zz_resized_second.png")  # near duplicate
    (src / "truncated.jpg").write_bytes(good[2].read_bytes()[:400])
    (src / "notes.txt").write_text("not a photo")
    (src / "fake.jpg").write_text("text pretending to be a jpeg")
    Image.new("RGB", (32, 40), "red").save(src / "tiny.png")
    (src / "bomb.png").write_bytes(bomb_png(30000, 30000))

    result = curate(str(src), tmp_path / "out", PARAMS, resolution=64)

    entries = by_source(result)
    assert len(entries) == 11, "every input file appears in the manifest"
    assert result.accepted == 4 and result.rejected == 7
    assert entries["zz_copy_of_first.jpg"].reason.startswith("exact duplicate of robot_01.jpg")
    assert entries["zz_resized_second.png"].reason.startswith("near duplicate of robot_02.jpg")
    assert entries["truncated.jpg"].reason.startswith("unreadable or truncated")
    assert entries["notes.txt"].reason == "not an image (unsupported file type)"
    assert entries["fake.jpg"].reason == "not an image (unrecognised format)"
    assert entries["tiny.png"].reason.startswith("too small: 32x40")
    assert entries["bomb.png"].reason.startswith("decompression bomb")
    manifest = (tmp_path / "out" / "manifest.json").read_text()
    assert "truncated.jpg" in manifest and "unreadable or truncated" in manifest
    images = sorted((tmp_path / "out" / "images").iterdir())
    assert len(images) == 4
    assert all(Image.open(p).size == (64, 64) and Image.open(p).mode == "RGB" for p in images)


def test_decompression_bomb_limit_is_configurable(tmp_path, good):
    with pytest.raises(NotEnoughImages):
        curate(str(good[0].parent), tmp_path / "out", PARAMS.model_copy(update={"max_pixels": 5000}), 64)
    entries = CurateResult.read(tmp_path / "out" / "manifest.json").entries
    assert len(entries) == 4
    assert all(e.reason == "decompression bomb: more than 5000 pixels" for e in entries)


def test_modes_are_converted_to_rgb(tmp_path):
    src = tmp_path / "modes"
    src.mkdir()
    rng = np.random.default_rng(0)

    def noise(mode_channels):
        return rng.integers(0, 255, size=(80, 80, mode_channels), dtype=np.uint8)

    Image.fromarray(noise(3)).convert("CMYK").save(src / "cmyk.jpg")
    palette = Image.fromarray(noise(3)).convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = 0
    palette.save(src / "palette.png", transparency=0)
    Image.fromarray(noise(4), "RGBA").save(src / "alpha.png")
    Image.fromarray(rng.integers(0, 65535, size=(80, 80), dtype=np.uint16)).save(src / "sixteen.png")
    Image.fromarray(noise(2), "LA").save(src / "grey_alpha.png")

    result = curate(str(src), tmp_path / "out", PARAMS.model_copy(update={"near_duplicate_distance": 0}), 64)

    entries = by_source(result)
    assert {e.original_mode for e in entries.values()} == {"CMYK", "P", "RGBA", "I;16", "LA"}
    assert result.accepted == 5, [e.reason for e in result.entries]
    for path in (tmp_path / "out" / "images").iterdir():
        img = Image.open(path)
        assert img.mode == "RGB" and img.size == (64, 64)


def test_exif_orientation_is_applied(tmp_path):
    src = tmp_path / "exif"
    src.mkdir()
    img = Image.new("RGB", (160, 80), "blue")
    img.paste(Image.new("RGB", (80, 80), "red"), (0, 0))  # red on the left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": left side ends up on top
    img.save(src / "rotated.jpg", exif=exif, quality=95)

    result = curate(str(src), tmp_path / "out", PARAMS.model_copy(update={"crop": "pad"}), 64)

    assert result.entries[0].original_size == (80, 160)
    out = np.asarray(Image.open(tmp_path / "out" / result.entries[0].output))
    top, bottom = out[8, 32], out[56, 32]
    assert top[0] > 200 and top[2] < 60, "red half is on top after orientation"
    assert bottom[2] > 200 and bottom[0] < 60


def test_archives_reject_members_that_escape(tmp_path, good):
    zpath = tmp_path / "photos.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in good:
            zf.write(p, f"shoot/{p.name}")
        zf.writestr("../../escape.png", png_bytes(Image.new("RGB", (80, 80))))
    tpath = tmp_path / "photos.tar"
    with tarfile.open(tpath, "w") as tf:
        for p in good:
            tf.add(p, arcname=p.name)
        data = png_bytes(Image.new("RGB", (80, 80), "green"))
        info = tarfile.TarInfo("/etc/abs.png")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)

    zres = curate(str(zpath), tmp_path / "zout", PARAMS, 64)
    tres = curate(str(tpath), tmp_path / "tout", PARAMS, 64)

    assert zres.accepted == 4 and tres.accepted == 4
    assert by_source(zres)["photos.zip:../../escape.png"].reason == "archive member path escapes the target folder"
    assert by_source(tres)["photos.tar:/etc/abs.png"].reason == "archive member path escapes the target folder"
    assert "link or device" in by_source(tres)["photos.tar:link.png"].reason
    assert not (tmp_path / "escape.png").exists()


def test_too_few_survivors_is_an_error_after_writing_the_manifest(tmp_path, good):
    out, params = tmp_path / "out", PARAMS.model_copy(update={"min_images": 3})
    assert curate(str(good[0].parent), out, params, 64).accepted == 4  # a good run first, same folder
    assert len(list((out / "images").iterdir())) == 4
    src = tmp_path / "few"
    src.mkdir()
    shutil.copy(good[0], src / "a.jpg")
    shutil.copy(good[0], src / "b.jpg")
    (src / "c.txt").write_text("x")
    with pytest.raises(NotEnoughImages, match=r"only 1 photo\(s\) accepted, min_images=3"):
        curate(str(src), out, params, 64)
    manifest = CurateResult.read(out / "manifest.json")
    assert manifest.source == str(src) and "exact duplicate of a.jpg" in (out / "manifest.json").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"], "the previous training set is gone"
    assert not list(tmp_path.glob("out*.partial")), "and no partial one is left behind"


def test_manifest_hashes_are_those_of_the_input_files(tmp_path, good):
    """sha256 of each photo's bytes as read, and the perceptual hash of the photo as decoded."""
    result = curate(str(good[0].parent), tmp_path / "out", PARAMS, 64)
    entries = by_source(result)
    assert sorted(entries) == sorted(p.name for p in good)
    for photo in good:
        entry = entries[photo.name]
        assert entry.sha256 == hashlib.sha256(photo.read_bytes()).hexdigest()
        assert entry.phash == str(imagehash.phash(Image.open(photo).convert("RGB")))
        assert entry.original_size == Image.open(photo).size


def test_rerun_replaces_previous_output(tmp_path, good):
    curate(str(good[0].parent), tmp_path / "out", PARAMS, 64)
    shutil.copy(good[0], tmp_path / "single.jpg")
    (good[0].parent / good[3].name).unlink()
    result = curate(str(good[0].parent), tmp_path / "out", PARAMS, 64)
    assert result.accepted == 3
    assert len(list((tmp_path / "out" / "images").iterdir())) == 3
