"""curate reads photos from an s3:// prefix over real HTTP (moto's server mode)."""

from components.config import CurateParams
from components.curate import curate
from components.samples import write_sample_photos


def test_curate_from_s3_prefix(tmp_path, s3):
    s3.create_bucket(Bucket="photos")
    for path in write_sample_photos(tmp_path / "local", count=4):
        s3.upload_file(str(path), "photos", f"concepts/robot/{path.name}")
    s3.put_object(Bucket="photos", Key="concepts/robot/readme.txt", Body=b"hello")
    s3.put_object(Bucket="photos", Key="concepts/other/x.jpg", Body=b"not in the prefix")

    result = curate("s3://photos/concepts/robot/", tmp_path / "out", CurateParams(min_images=3), 64)

    assert result.accepted == 4
    sources = [e.source for e in result.entries]
    assert len(sources) == 5 and not any("other" in s for s in sources)
    assert {e.reason for e in result.entries if e.status == "rejected"} == {"not an image (unsupported file type)"}
