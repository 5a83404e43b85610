"""curate: raw photos (folder, .zip/.tar archive or s3:// prefix) -> normalised training images + manifest.

Every input is listed in manifest.json, accepted or rejected with its reason; a bad file never stops
the stage. Too few survivors is an explicit error, raised after the manifest is written.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Literal

import imagehash
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel
from tqdm import tqdm

from components.buckets import SQUARE, Bucket, crop_box, nearest_bucket, resolve_buckets
from components.config import CurateParams
from components.errors import NotEnoughImages
from components.io import StageResult, new_staging_dir, publish, sha256_bytes, slugify

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


class RawPhoto(BaseModel):
    source: str
    data: bytes | None = None
    problem: str | None = None  # set when the input could not even be read


class ManifestEntry(BaseModel):
    source: str
    status: Literal["accepted", "rejected"]
    reason: str | None = None
    sha256: str | None = None
    phash: str | None = None
    original_size: tuple[int, int] | None = None  # width, height
    # The part of the original the output shows (left, top, right, bottom, in original pixels);
    # None when nothing was cut (pad). SDXL-style models condition on it.
    crop_box: tuple[float, float, float, float] | None = None
    original_mode: str | None = None
    output: str | None = None
    bucket: tuple[int, int] | None = None  # the accepted image's size (width, height): its aspect bucket


class CurateResult(StageResult):
    source: str
    resolution: int
    buckets: list[tuple[int, int]] = []  # the aspect buckets photos were sorted into (width, height)
    accepted: int
    rejected: int
    entries: list[ManifestEntry]

    def accepted_images(self, curated_dir: Path) -> list[Path]:
        return [curated_dir / e.output for e in self.entries if e.status == "accepted" and e.output]


def _safe_member_name(name: str) -> str | None:
    """The member's path if it stays inside the archive root, else None (zip-slip / tar traversal)."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and p.parts[0].endswith(":")):
        return None
    return str(p)


def _iter_zip(path: Path) -> Iterator[RawPhoto]:
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            source = f"{path.name}:{info.filename}"
            if _safe_member_name(info.filename) is None:
                yield RawPhoto(source=source, problem="archive member path escapes the target folder")
                continue
            yield RawPhoto(source=source, data=zf.read(info))


def _iter_tar(path: Path) -> Iterator[RawPhoto]:
    with tarfile.open(path) as tf:
        for member in tf.getmembers():
            if member.isdir():
                continue
            source = f"{path.name}:{member.name}"
            if _safe_member_name(member.name) is None:
                yield RawPhoto(source=source, problem="archive member path escapes the target folder")
            elif not member.isfile():
                yield RawPhoto(source=source, problem="archive member is a link or device, not a regular file")
            else:
                yield RawPhoto(source=source, data=tf.extractfile(member).read())


def _iter_folder(path: Path) -> Iterator[RawPhoto]:
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        rel = str(file.relative_to(path))
        if file.is_symlink() and not file.resolve().is_relative_to(path.resolve()):
            yield RawPhoto(source=rel, problem="symlink points outside the photo folder")
            continue
        yield RawPhoto(source=rel, data=file.read_bytes())


def _iter_s3(uri: str) -> Iterator[RawPhoto]:
    import boto3  # endpoint and credentials from the environment (AWS_ENDPOINT_URL, AWS_PROFILE, ...)

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in sorted(page.get("Contents", []), key=lambda o: o["Key"]):
            if obj["Key"].endswith("/"):
                continue
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            yield RawPhoto(source=f"s3://{bucket}/{obj['Key']}", data=body)


def iter_raw_photos(source: str) -> Iterator[RawPhoto]:
    if source.startswith("s3://"):
        return _iter_s3(source)
    path = Path(source)
    if path.is_dir():
        return _iter_folder(path)
    if zipfile.is_zipfile(path):
        return _iter_zip(path)
    if tarfile.is_tarfile(path):
        return _iter_tar(path)
    raise ValueError(f"photos source {source}: not a folder, .zip or .tar archive, or s3:// prefix")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; transparency is composited over white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale the used range to 8 bits instead of clipping at 255.
        img = img.convert("I")
        lo, hi = img.getextrema()
        scale = 255.0 / max(hi - lo, 1)
        img = img.point(lambda v: (v - lo) * scale).convert("L")
    elif img.mode == "F":
        lo, hi = img.getextrema()
        img = img.point(lambda v: (v - lo) * 255.0 / max(hi - lo, 1e-9)).convert("L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def center_crop_box(size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The square that ImageOps.fit cuts from an image of ``size`` (centred, no bleed)."""
    width, height = size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return (left, top, left + side, top + side)


def fit_square(img: Image.Image, resolution: int, crop: str) -> Image.Image:
    if crop == "center":
        return ImageOps.fit(img, (resolution, resolution), method=Image.Resampling.LANCZOS)
    return ImageOps.pad(img, (resolution, resolution), method=Image.Resampling.LANCZOS, color=(255, 255, 255))


def fit_bucket(img: Image.Image, bucket: Bucket, crop: str) -> tuple[Image.Image, tuple | None]:
    """The photo at the bucket's size and the part of it kept (None when padded): the minimal centred
    crop to the bucket's aspect, resized; or the whole photo padded with white."""
    if crop == "center":
        box = crop_box(img.size, bucket)
        return img.resize(bucket, Image.Resampling.LANCZOS, box=box), box
    return ImageOps.pad(img, bucket, method=Image.Resampling.LANCZOS, color=(255, 255, 255)), None


def _decode(data: bytes, max_pixels: int) -> tuple[Image.Image | None, str | None, str | None]:
    """(image, original mode, rejection reason)."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > max_pixels:
                raise Image.DecompressionBombError("size")
            img.load()  # decodes fully: truncated files fail here, not later
            mode = img.mode
            img = ImageOps.exif_transpose(img)
            return img, mode, None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None, None, f"decompression bomb: more than {max_pixels} pixels"
    except UnidentifiedImageError:
        return None, None, "not an image (unrecognised format)"
    except (OSError, SyntaxError, ValueError) as exc:
        return None, None, f"unreadable or truncated image: {exc}"
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def curate(source: str, out_dir: Path, params: CurateParams, resolution: int) -> CurateResult:
    """Normalises the photos at ``source`` into ``out_dir`` (PNG, RGB, square at ``resolution``, or at
    the nearest aspect bucket when curate.aspect_buckets is not 'square')."""
    buckets = resolve_buckets(params.aspect_buckets, resolution)
    staging = new_staging_dir(out_dir)
    entries: list[ManifestEntry] = []
    by_sha: dict[str, str] = {}
    by_phash: list[tuple[imagehash.ImageHash, str]] = []
    accepted = 0

    for raw in tqdm(iter_raw_photos(source), desc="curate", unit="photo", leave=False):
        entry = ManifestEntry(source=raw.source, status="rejected")
        entries.append(entry)
        if raw.problem:
            entry.reason = raw.problem
            continue
        entry.sha256 = sha256_bytes(raw.data)
        if entry.sha256 in by_sha:
            entry.reason = f"exact duplicate of {by_sha[entry.sha256]}"
            continue
        by_sha[entry.sha256] = raw.source
        if Path(raw.source).suffix.lower() not in IMAGE_SUFFIXES and not _looks_like_image(raw.data):
            entry.reason = "not an image (unsupported file type)"
            continue
        img, mode, problem = _decode(raw.data, params.max_pixels)
        if problem:
            entry.reason = problem
            continue
        entry.original_size, entry.original_mode = img.size, mode
        if min(img.size) < params.min_side:
            entry.reason = f"too small: {img.width}x{img.height}, shorter side below min_side={params.min_side}"
            continue
        rgb = to_rgb(img)
        phash = imagehash.phash(rgb)
        entry.phash = str(phash)
        near = next(((src, phash - h) for h, src in by_phash if phash - h <= params.near_duplicate_distance), None)
        if near:
            entry.reason = f"near duplicate of {near[0]} (pHash distance {near[1]})"
            continue
        if accepted >= params.max_images:
            entry.reason = f"over max_images={params.max_images}"
            continue
        by_phash.append((phash, raw.source))
        accepted += 1
        # Named by content, not position: adding or removing a photo leaves the others' names alone.
        name = f"{slugify(Path(raw.source).stem)[:40]}-{entry.sha256[:8]}.png"
        if params.aspect_buckets == SQUARE:  # as before buckets existed, byte for byte
            fit_square(rgb, resolution, params.crop).save(staging / name, format="PNG")
            entry.crop_box = center_crop_box(rgb.size) if params.crop == "center" else None
            entry.bucket = (resolution, resolution)
        else:
            entry.bucket = nearest_bucket(rgb.size, buckets)
            out, entry.crop_box = fit_bucket(rgb, entry.bucket, params.crop)
            out.save(staging / name, format="PNG")
        entry.status, entry.output = "accepted", f"images/{name}"

    result = CurateResult(
        source=source,
        resolution=resolution,
        buckets=buckets,
        accepted=accepted,
        rejected=len(entries) - accepted,
        entries=entries,
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    if accepted < params.min_images:
        shutil.rmtree(staging)
        result.write(out_dir / "manifest.json")
        raise NotEnoughImages(
            f"{source}: only {accepted} photo(s) accepted, min_images={params.min_images}. "
            f"See {out_dir / 'manifest.json'} for each rejection reason; add photos or lower curate.min_images."
        )
    publish(staging, out_dir / "images")
    result.write(out_dir / "manifest.json")
    return result


def _looks_like_image(data: bytes) -> bool:
    try:
        Image.open(io.BytesIO(data)).verify()
        return True
    except Exception:
        return False
