"""Where streamed sets live: URL checks, the set's files in a local folder and in S3, errors that say what to do."""

from pathlib import Path

import pytest

from nst_fast.errors import ConfigError
from nst_fast.stream import storage


def test_urls_are_s3_or_local_and_never_hold_credentials(tmp_path: Path) -> None:
    assert storage.check_url("s3://bucket/coco/", "data.url") == "s3://bucket/coco"
    assert storage.check_url(f"{tmp_path}/set/", "data.url") == f"{tmp_path}/set"
    assert storage.check_url(f"file://{tmp_path}/set", "data.url") == f"{tmp_path}/set"
    assert storage.check_url("~/set", "data.url") == str(Path.home() / "set")
    with pytest.raises(ConfigError, match="data.url='gs://bucket/set': a streamed set lives at s3://bucket/prefix"):
        storage.check_url("gs://bucket/set", "data.url")
    with pytest.raises(ConfigError, match="DEST='s3:///set' names no bucket"):
        storage.check_url("s3:///set", "DEST")
    with pytest.raises(ConfigError, match="the URL holds credentials") as error:
        storage.check_url("s3://AKIA:topsecret@bucket/set", "data.url")
    assert "topsecret" not in str(error.value)


def test_missing_extra_says_how_to_install() -> None:
    with pytest.raises(
        ConfigError, match=r"need no_such_package, which is not installed: pip install 'nst-fast\[stream\]'"
    ):
        storage.require("no_such_package.sub")


def test_a_local_set_files_and_removal(tmp_path: Path) -> None:
    root = tmp_path / "set"
    assert storage.read_metadata(str(root)) is None and storage.list_names(str(root)) == []
    storage.write_metadata(str(root), {"photos": 3})
    assert storage.read_metadata(str(root)) == {"photos": 3}
    for name in ("chunk-0-0.bin", "index.json", ".checkpoints/checkpoint-0.json", "notes.txt"):
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_text("x")
    assert sorted(storage.list_names(str(root))) == [
        ".checkpoints/checkpoint-0.json",
        "chunk-0-0.bin",
        "index.json",
        "notes.txt",
        "nst-fast.json",
    ]
    storage.remove_set(str(root))
    assert storage.list_names(str(root)) == ["notes.txt"], "only what a conversion writes is removed"


@pytest.mark.slow
def test_a_set_in_s3(s3) -> None:
    url = s3.url("sets/a")
    storage.write_metadata(url, {"photos": 2})
    assert storage.read_metadata(url) == {"photos": 2} and storage.read_metadata(s3.url("sets/none")) is None
    s3.client().put_object(Bucket=s3.bucket, Key="sets/a/chunk-0-0.bin", Body=b"x")
    s3.client().put_object(Bucket=s3.bucket, Key="sets/a/mine.txt", Body=b"x")
    assert sorted(storage.list_names(url)) == ["chunk-0-0.bin", "mine.txt", "nst-fast.json"]
    storage.remove_set(url)
    assert s3.keys("sets/a/") == ["sets/a/mine.txt"]


@pytest.mark.slow
def test_unreachable_storage_says_where_settings_come_from(s3, monkeypatch) -> None:
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # a fresh process's session: nothing resolved yet
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ConfigError, match="could not reach s3://photos/x: Unable to locate credentials. Credentials"):
        storage.read_metadata(s3.url("x"))
    s3.apply(monkeypatch)
    with pytest.raises(ConfigError, match="could not reach s3://no-such-bucket/x: .*NoSuchBucket"):
        storage.read_metadata("s3://no-such-bucket/x")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(ConfigError, match="could not reach s3://photos/x: Could not connect"):
        storage.read_metadata(s3.url("x"), endpoint_url="http://127.0.0.1:9")
