"""Builds the Triton model repository a ModelDeployment pod serves (its init container).

`python -m strata_workloads.model_repository --config /etc/strata/model-repository.yaml`
(rendered by the operator, operator/strata/render/serving.py:render_repository_config).

From the source repository (mounted read-only) it makes, in an empty directory:

    <target>/<model>/config.pbtxt    the source's config with the ModelDeployment's Triton
                                     settings merged in, the version policy pinned to the
                                     served version
    <target>/<model>/<version>  ->   a symlink to the source's version directory (no copy)
    <target>/<model>/<other>    ->   symlinks to any other files beside the versions

so Triton serves exactly the declared version with the declared batching and instances,
whatever the source's config says. An S3 repository (settings "s3") is first downloaded into
the source directory (an emptyDir then), and only what is served: the model's config.pbtxt,
the served version's directory and the files beside the versions. A missing model or version
ends the container with the reason in its termination message (kubectl describe pod shows it)
and a non-zero status.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from strata_workloads import s3 as s3access

TERMINATION_LOG = Path("/dev/termination-log")


class RepositoryError(Exception):
    """The source repository cannot provide what the ModelDeployment declares."""


def versions_in(model_dir: Path) -> list[int]:
    return sorted(int(path.name) for path in model_dir.iterdir() if path.is_dir() and path.name.isdigit())


def choose_version(declared: int | None, versions: list[int], model: str, where: str) -> int:
    """The declared version, or the newest when none is declared; it must be in `versions`."""
    version = declared or (max(versions) if versions else None)
    if version is None or version not in versions:
        raise RepositoryError(f"version {version} of model {model!r} is not in {where} "
                              f"(versions there: {', '.join(map(str, sorted(versions))) or 'none'})")
    return version


def fetch(settings: dict[str, Any]) -> int:
    """Download the served model from the S3 repository settings["s3"] into settings["source"];
    returns the version it downloaded."""
    from pyarrow import fs

    s3 = settings["s3"]
    model = settings["model"]
    try:
        filesystem = s3access.filesystem(s3.get("endpoint"), s3.get("region"), s3.get("credentialsPath"))
        repository = s3access.bucket_path(s3["uri"])
    except s3access.S3Error as error:
        raise RepositoryError(f"{s3['uri']}: {error}") from None
    prefix = f"{repository}/{model}"
    listing = filesystem.get_file_info(fs.FileSelector(prefix, recursive=True, allow_not_found=True))
    files = {item.path[len(prefix) + 1:]: item for item in listing if item.type == fs.FileType.File}
    if not files:
        models = filesystem.get_file_info(fs.FileSelector(repository, allow_not_found=True))
        available = sorted(item.base_name for item in models if item.type == fs.FileType.Directory)
        raise RepositoryError(f"model {model!r} is not in the repository {s3['uri']} "
                              f"(it has: {', '.join(available) or 'nothing'})")
    for relative in files:
        if any(part in ("", ".", "..") for part in relative.split("/")):
            raise RepositoryError(f"s3://{prefix}/{relative} is not a path a repository may hold")
    versions = sorted({int(head) for relative in files if "/" in relative
                       for head in [relative.split("/", 1)[0]] if head.isdigit()})
    version = choose_version(settings.get("version"), versions, model, f"s3://{prefix}")
    target = Path(settings["source"]) / model
    if target.exists():  # a restarted init container starts over
        shutil.rmtree(target)
    for relative, item in sorted(files.items()):
        head = relative.split("/", 1)[0]
        if head.isdigit() and "/" in relative and int(head) != version:
            continue  # another version: not served, not downloaded
        local = target / relative
        local.parent.mkdir(parents=True, exist_ok=True)
        with filesystem.open_input_stream(item.path) as stream, open(local, "wb") as out:
            shutil.copyfileobj(stream, out, s3access.COPY_BUFFER)
    return version


def merged_config(source_text: str | None, settings: dict[str, Any], version: int) -> str:
    """The model's config.pbtxt text with the declared settings applied (Triton's own schema,
    through the protobuf definitions tritonclient ships)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = model_config_pb2.ModelConfig()
    if source_text:
        try:
            text_format.Parse(source_text, config)
        except text_format.ParseError as error:
            raise RepositoryError(f"config.pbtxt of model {settings['model']!r} is not a valid Triton model config: {error}") from error
    config.name = settings["model"]
    config.max_batch_size = int(settings["maxBatchSize"])
    config.ClearField("dynamic_batching")
    batching = settings.get("dynamicBatching")
    if batching is not None:
        config.dynamic_batching.preferred_batch_size.extend(batching.get("preferredBatchSizes") or [])
        config.dynamic_batching.max_queue_delay_microseconds = int(batching.get("maxQueueDelayMicroseconds", 0))
    config.ClearField("instance_group")
    kinds = {"GPU": model_config_pb2.ModelInstanceGroup.KIND_GPU, "CPU": model_config_pb2.ModelInstanceGroup.KIND_CPU}
    for group in settings.get("instanceGroups") or []:
        config.instance_group.add(kind=kinds[group["kind"]], count=int(group["count"]))
    config.version_policy.Clear()
    config.version_policy.specific.versions.append(version)
    return text_format.MessageToString(config)


def build(settings: dict[str, Any]) -> tuple[Path, int]:
    """Make the served repository; returns (model directory, version served)."""
    source = Path(settings["source"]) / settings["model"]
    if not source.is_dir():
        available = sorted(p.name for p in Path(settings["source"]).iterdir() if p.is_dir()) if Path(settings["source"]).is_dir() else []
        raise RepositoryError(f"model {settings['model']!r} is not in the repository {settings['source']} "
                              f"(it has: {', '.join(available) or 'nothing'})")
    version = choose_version(settings.get("version"), versions_in(source), settings["model"], str(source))
    target = Path(settings["target"]) / settings["model"]
    if target.exists():  # a restarted init container starts over
        shutil.rmtree(target)
    target.mkdir(parents=True)
    source_config = source / "config.pbtxt"
    text = source_config.read_text() if source_config.is_file() else None
    (target / "config.pbtxt").write_text(merged_config(text, settings, version))
    for entry in source.iterdir():
        if entry.name == "config.pbtxt" or (entry.name.isdigit() and entry.is_dir() and int(entry.name) != version):
            continue
        (target / entry.name).symlink_to(entry)
    return target, version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m strata_workloads.model_repository", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    settings = yaml.safe_load(args.config.read_text())
    try:
        if settings.get("s3"):
            fetch(settings)
        target, version = build(settings)
    except (RepositoryError, OSError) as error:
        message = f"Cannot serve the model: {error}"
        print(message, file=sys.stderr)
        try:
            TERMINATION_LOG.write_text(message)
        except OSError:
            pass
        return 2
    origin = settings["s3"]["uri"] if settings.get("s3") else settings["source"]
    print(f"Serving {settings['model']} version {version} from {origin} at {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
