"""Where a streamed photo set lives and how to reach it: a local folder or ``s3://bucket/prefix``.

Credentials, region and endpoint come from AWS's own sources, read by boto3: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``,
``~/.aws/credentials`` and ``~/.aws/config``, instance roles. An S3-compatible server (MinIO, Ceph, R2, a
loopback test server) is named by ``AWS_ENDPOINT_URL`` or the ``endpoint_url`` setting (``data.endpoint_url``,
``--endpoint-url``): an address, never a secret. Nothing here reads, stores or logs a key.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

from nst_fast.errors import ConfigError

#: The set's own description (``nst_fast.stream.convert``), next to litdata's ``index.json``.
METADATA_FILE = "nst-fast.json"
#: litdata's list of chunks (and the proof that a conversion finished).
INDEX_FILE = "index.json"


def require(module: str) -> ModuleType:
    """Import ``module`` of the ``stream`` extra (litdata, boto3), or raise ``ConfigError`` saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ConfigError(
            f"streamed photo sets need {module.split('.')[0]}, which is not installed: pip install 'nst-fast[stream]' "
            "(or pip install -e '.[dev]' in a checkout)"
        ) from error


def check_url(url: str, key: str) -> str:
    """``url`` without a trailing slash, when it is ``s3://bucket[/prefix]`` or a local path; ``ConfigError``
    naming ``key`` otherwise (another scheme, no bucket, or credentials written into the URL)."""
    parsed = urlparse(str(url))
    if parsed.scheme in ("", "file"):
        return str(Path(parsed.path if parsed.scheme else url).expanduser()).rstrip("/") or "/"
    if parsed.scheme != "s3":
        raise ConfigError(f"{key}={url!r}: a streamed set lives at s3://bucket/prefix or in a local folder")
    if "@" in parsed.netloc:
        raise ConfigError(
            f"{key}: the URL holds credentials; remove them and set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE) in the environment instead"
        )
    if not parsed.netloc:
        raise ConfigError(f"{key}={url!r} names no bucket: write s3://bucket/prefix")
    return url.rstrip("/")


def is_remote(url: str) -> bool:
    """Whether ``url`` is in object storage (``s3://``) rather than a local folder."""
    return str(url).startswith("s3://")


def storage_options(endpoint_url: str | None) -> dict[str, Any]:
    """litdata's ``storage_options`` (keyword arguments of boto3's S3 client): only the endpoint, when one is
    configured here; boto3 finds credentials (and ``AWS_ENDPOINT_URL``) itself."""
    allow_plain_http_endpoints()
    return {"endpoint_url": endpoint_url} if endpoint_url else {}


def allow_plain_http_endpoints() -> None:
    """Let litdata's fast download path (obstore) use an ``http://`` endpoint, as boto3 does.

    litdata 0.2.76 downloads chunks through obstore with fixed client options that refuse plain HTTP, so an
    ``http://`` endpoint (a MinIO in the cluster, our loopback test server) fails with "builder error:
    BadScheme" while boto3, used for ``index.json``, reaches it. Adding ``allow_http`` only lets obstore follow
    the scheme the configured endpoint already has; AWS endpoints stay https. Called at import of the modules
    that stream, so that spawned loader workers get it too.
    """
    options = getattr(require("litdata.streaming.downloader"), "_OBSTORE_CLIENT_OPTIONS", None)
    if isinstance(options, dict):
        options["allow_http"] = True


def _s3_client(endpoint_url: str | None) -> Any:
    return require("boto3").client("s3", endpoint_url=endpoint_url or None)


def _split(url: str, name: str) -> tuple[str, str]:
    parsed = urlparse(url)
    return parsed.netloc, "/".join(part for part in (parsed.path.strip("/"), name) if part)


def _explain(url: str, error: Exception) -> str:
    return (
        f"could not reach {url}: {error}. Credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
        "AWS_PROFILE or ~/.aws; an S3-compatible server's address from AWS_ENDPOINT_URL or the endpoint_url setting"
    )


def read_text(url: str, name: str, endpoint_url: str | None = None) -> str | None:
    """The text of file ``name`` in the set at ``url``; ``None`` when it does not exist. Raises ``ConfigError``
    when the storage cannot be reached (no credentials, no such bucket, no endpoint), saying where settings come
    from."""
    if not is_remote(url):
        path = Path(url) / name
        return path.read_text() if path.is_file() else None
    bucket, key = _split(url, name)
    errors = require("botocore.exceptions")
    try:
        return _s3_client(endpoint_url).get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    except errors.ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise ConfigError(_explain(url, error)) from None
    except errors.BotoCoreError as error:
        raise ConfigError(_explain(url, error)) from None


def write_text(url: str, name: str, text: str, endpoint_url: str | None = None) -> None:
    """Write file ``name`` of the set at ``url`` (creating a local folder); ``ConfigError`` as ``read_text``."""
    if not is_remote(url):
        Path(url).mkdir(parents=True, exist_ok=True)
        (Path(url) / name).write_text(text)
        return
    errors = require("botocore.exceptions")
    bucket, key = _split(url, name)
    try:
        _s3_client(endpoint_url).put_object(Bucket=bucket, Key=key, Body=text.encode())
    except (errors.BotoCoreError, errors.ClientError) as error:
        raise ConfigError(_explain(url, error)) from None


def is_ours(name: str) -> bool:
    """Whether a file name (relative to the set) is one a conversion writes: chunks, indexes, checkpoints."""
    return name.endswith((".bin", INDEX_FILE)) or name == METADATA_FILE or name.startswith(".checkpoints/")


def list_names(url: str, endpoint_url: str | None = None) -> list[str]:
    """The names of all files under ``url``, relative to it (empty when it does not exist)."""
    if not is_remote(url):
        root = Path(url)
        return (
            [path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()] if root.is_dir() else []
        )
    errors = require("botocore.exceptions")
    bucket, prefix = _split(url, "")
    prefix = prefix + "/" if prefix else ""
    try:
        pages = _s3_client(endpoint_url).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"][len(prefix) :] for page in pages for item in page.get("Contents", [])]
    except (errors.BotoCoreError, errors.ClientError) as error:
        raise ConfigError(_explain(url, error)) from None


def remove_set(url: str, endpoint_url: str | None = None) -> None:
    """Delete the converted set at ``url``: only the files a conversion writes (anything else stays)."""
    if not is_remote(url):
        root = Path(url)
        if root.is_dir():
            for path in sorted(root.rglob("*"), reverse=True):
                if path.is_file() and is_ours(path.relative_to(root).as_posix()):
                    path.unlink()
            if (root / ".checkpoints").is_dir() and not any((root / ".checkpoints").iterdir()):
                (root / ".checkpoints").rmdir()
        return
    errors = require("botocore.exceptions")
    bucket, prefix = _split(url, "")
    prefix = prefix + "/" if prefix else ""
    client = _s3_client(endpoint_url)
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys = [item["Key"] for item in page.get("Contents", []) if is_ours(item["Key"][len(prefix) :])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key} for key in keys]})
    except (errors.BotoCoreError, errors.ClientError) as error:
        raise ConfigError(_explain(url, error)) from None


def read_metadata(url: str, endpoint_url: str | None = None) -> dict[str, Any] | None:
    """The set's description (``METADATA_FILE``), or ``None`` when there is none."""
    text = read_text(url, METADATA_FILE, endpoint_url)
    return json.loads(text) if text is not None else None


def write_metadata(url: str, metadata: dict[str, Any], endpoint_url: str | None = None) -> None:
    """Write the set's description (``METADATA_FILE``)."""
    write_text(url, METADATA_FILE, json.dumps(metadata, indent=2) + "\n", endpoint_url)
