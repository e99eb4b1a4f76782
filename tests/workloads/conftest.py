"""Fixtures for the trainer workload tests: small datasets, an MLflow server, shared training runs.

Training runs are real: torchrun with two CPU ranks, DeepSpeed over gloo. Each (family, ZeRO
stage) run happens at most once per session and is shared by the tests that inspect it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from s3_support import seaweedfs
from workload_harness import TrainerRun, base_config, free_port, launch, scrape, start_mlflow_server

from strata_workloads.data.synthetic import write_image_dataset, write_text_dataset


@pytest.fixture(scope="session")
def text_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("datasets") / "text-v1"
    write_text_dataset(root, rows_per_shard=100)  # 256 training rows -> 3 shards
    return root


@pytest.fixture(scope="session")
def image_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("datasets") / "bars-v1"
    write_image_dataset(root, rows_per_shard=100)
    return root


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """SeaweedFS's S3 API on loopback (s3_support.py), shared by the tests that read S3."""
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    server, uri = start_mlflow_server(tmp_path_factory.mktemp("mlflow"))
    yield uri
    server.close()


@pytest.fixture(scope="session")
def transformer_run(tmp_path_factory, text_dataset, mlflow_server) -> TrainerRun:
    """The richest run: ZeRO-2 transformer with tracking, checkpoints, metrics port and int8 export."""
    workdir = tmp_path_factory.mktemp("run-transformer-zero2")
    port = free_port()
    config = base_config(
        "transformer", text_dataset, workdir, zero_stage=2,
        hyperparameters={"maxSteps": 16},
        checkpoints={"dir": str(workdir / "checkpoints"), "everySteps": 8, "keep": 1},
        export={"dir": str(workdir / "repository"), "modelName": "textgen", "quantization": "int8", "samples": 2},
        tracking={"mlflowUri": mlflow_server, "experiment": "strata-tests", "runName": "transformer-zero2"},
        observability={"metricsPort": port},
    )
    scraped: list[str] = []

    def scrape_once(event, _process):
        # Scrape while the run is alive: after the first step the gauges hold real values.
        if event["event"] == "step" and not scraped:
            scraped.append(scrape(port))

    run = launch(config, workdir, on_event=scrape_once)
    run.scraped_metrics = scraped[0] if scraped else None
    return run


_family_runs: dict[tuple[str, int], TrainerRun] = {}


@pytest.fixture(scope="session")
def family_run(request, tmp_path_factory, text_dataset, image_dataset):
    """``family_run(family, stage)``: train (once per session) and return the run."""

    def get(family: str, zero_stage: int) -> TrainerRun:
        if (family, zero_stage) == ("transformer", 2):
            return request.getfixturevalue("transformer_run")
        key = (family, zero_stage)
        if key not in _family_runs:
            workdir = tmp_path_factory.mktemp(f"run-{family}-zero{zero_stage}")
            data = text_dataset if family == "transformer" else image_dataset
            config = base_config(family, data, workdir, zero_stage=zero_stage,
                                 export={"dir": str(workdir / "repository"), "modelName": family,
                                         "quantization": "int8" if family == "vae" else "none", "samples": 2})
            _family_runs[key] = launch(config, workdir)
        return _family_runs[key]

    return get
