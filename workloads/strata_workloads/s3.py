"""S3 (and S3-compatible: SeaweedFS, MinIO, Ceph) access shared by the pods that use it: a
Dataset's sources (data/sources.py), a ModelDeployment's S3 model repository
(model_repository.py) and the trainer's export to one (train/export.py). pyarrow's S3
filesystem does the signing and the transfers.

Credentials come from a mounted Secret's files AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
(and AWS_SESSION_TOKEN when present) where the operator mounted one, else from the AWS_*
environment variables, else the access is anonymous.
"""

from __future__ import annotations

import os
import shutil
import urllib.parse
from pathlib import Path
from typing import Any

CREDENTIAL_NAMES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
DEFAULT_REGION = "us-east-1"
COPY_BUFFER = 1 << 20


class S3Error(Exception):
    """S3 cannot be reached as configured; the message says what to fix."""


def bucket_path(uri: str) -> str:
    """s3://bucket/prefix/ -> bucket/prefix (pyarrow's paths)."""
    if not uri.startswith("s3://") or not uri[len("s3://"):].strip("/"):
        raise S3Error(f"{uri!r} is not an s3://bucket/prefix URI")
    return uri[len("s3://"):].rstrip("/")


def credentials(credentials_path: str | None) -> dict[str, str]:
    """The keys from the Secret's files under `credentials_path`, or from the environment."""
    if credentials_path is not None:
        root = Path(credentials_path)
        values = {name: (root / name).read_text().strip() for name in CREDENTIAL_NAMES if (root / name).is_file()}
        where = f"files in {credentials_path} (the mounted Secret)"
    else:
        values = {name: os.environ[name] for name in CREDENTIAL_NAMES if os.environ.get(name)}
        where = "environment variables"
    if bool(values.get("AWS_ACCESS_KEY_ID")) != bool(values.get("AWS_SECRET_ACCESS_KEY")):
        raise S3Error(f"set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY as {where}, or neither")
    return values


def filesystem(endpoint: str | None = None, region: str | None = None, credentials_path: str | None = None) -> Any:
    """A pyarrow S3FileSystem for `endpoint` (AWS when None), signed with the credentials."""
    from pyarrow import fs

    keys = credentials(credentials_path)
    options: dict[str, Any] = {"region": region or DEFAULT_REGION}
    if keys:
        options.update(access_key=keys["AWS_ACCESS_KEY_ID"], secret_key=keys["AWS_SECRET_ACCESS_KEY"],
                       session_token=keys.get("AWS_SESSION_TOKEN"))
    else:
        options["anonymous"] = True
    if endpoint is not None:
        parts = urllib.parse.urlsplit(endpoint)
        options.update(endpoint_override=parts.netloc, scheme=parts.scheme)
    return fs.S3FileSystem(**options)


def version_directories(filesystem: Any, path: str) -> list[int]:
    """The numbered directories directly under bucket/path (a Triton model's versions), sorted."""
    from pyarrow import fs

    listing = filesystem.get_file_info(fs.FileSelector(path, allow_not_found=True))
    return sorted(int(item.base_name) for item in listing
                  if item.type == fs.FileType.Directory and item.base_name.isdigit())


def upload_file(filesystem: Any, local: Path, path: str) -> None:
    with open(local, "rb") as source, filesystem.open_output_stream(path) as out:
        shutil.copyfileobj(source, out, COPY_BUFFER)


def upload_tree(filesystem: Any, local: Path, path: str) -> None:
    """Every file under `local` to bucket/path/<its relative path>."""
    for file in sorted(local.rglob("*")):
        if file.is_file():
            upload_file(filesystem, file, f"{path}/{file.relative_to(local)}")
