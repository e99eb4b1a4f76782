"""Bad configuration fails fast, with a message that names the setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from strata_workloads.train.config import ConfigError, load_config, parse_config

VALID = {"model": {"family": "transformer"}, "data": {"path": "/data/text"}}


def with_changes(**sections):
    config = json.loads(json.dumps(VALID))
    for section, values in sections.items():
        if values is None:
            config.pop(section)
        else:
            config.setdefault(section, {}).update(values)
    return config


BAD_CONFIGS = [
    pytest.param(with_changes(model={"family": "rnn"}), "model.family: unknown model family 'rnn'",
                 id="unknown family is rejected"),
    pytest.param(with_changes(deepspeed={"microBatchSize": 0}), "deepspeed.microBatchSize: must be at least 1, got 0",
                 id="zero batch size is rejected"),
    pytest.param(with_changes(deepspeed={"zeroStage": 4}), "deepspeed.zeroStage: must be 0..3, got 4",
                 id="zero stage 4 is rejected"),
    pytest.param(with_changes(data=None), "data: required setting is missing", id="missing data section is rejected"),
    pytest.param(with_changes(deepspeed={"precision": "fp8"}), "deepspeed.precision:",
                 id="unknown precision is rejected"),
    pytest.param(with_changes(deepspeed={"offload": "cpu", "zeroStage": 0}), "offload: cpu needs zeroStage >= 1",
                 id="offload without ZeRO is rejected"),
    pytest.param(with_changes(hyperparameters={"learningRate": 0}), "hyperparameters.learningRate: must be greater than 0",
                 id="zero learning rate is rejected"),
    pytest.param(with_changes(model={"family": "transformer", "size": {"hidden": 30, "heads": 4}}),
                 "model.size: hidden (30) must be divisible by heads (4)", id="heads must divide hidden"),
    pytest.param(with_changes(hyperparameters={"seed": 2**32}), "hyperparameters.seed: must be at most 4294967295",
                 id="a seed above 32 bits, which would overflow the derived seeds, is rejected"),
    pytest.param(with_changes(deepspeed={"zeroStages": 2}), "deepspeed.zeroStages: unknown setting",
                 id="misspelt setting is rejected"),
    pytest.param(with_changes(export={"quantization": "int4"}), "export.quantization:",
                 id="unknown quantization is rejected"),
    pytest.param(with_changes(data={"path": "/d", "documentAttention": True}),
                 "data: documentAttention: needs packing: true", id="document attention without packing is rejected"),
    pytest.param(with_changes(model={"family": "vae"}, data={"path": "/d", "packing": True}),
                 "data.packing: packs text documents; the vae family trains on images",
                 id="packing an image family is rejected"),
    pytest.param(with_changes(model={"family": "gan"}, performance={"activationCheckpointing": True}),
                 "performance.activationCheckpointing: the gan family has no blocks to recompute",
                 id="activation checkpointing without blocks is rejected"),
    pytest.param(with_changes(model={"family": "vae"}, performance={"compile": True}),
                 "performance.compile: compiles blocks, which the vae family has none of",
                 id="compiling a family without blocks is rejected"),
    pytest.param(with_changes(deepspeed={"zeroStage": 3}, performance={"compile": True}),
                 "performance.compile: not supported with deepspeed.zeroStage 3", id="compile under ZeRO-3 is rejected"),
    pytest.param(with_changes(data={"path": "/d", "packing": True, "documentAttention": True},
                              performance={"attention": "flash"}),
                 "performance.attention: flash takes no attention mask", id="flash with document attention is rejected"),
    pytest.param(with_changes(model={"family": "diffusion"}, performance={"attention": "math"}),
                 "performance.attention: selects the transformer's attention kernel",
                 id="an attention kernel for a family without attention is rejected"),
    pytest.param(with_changes(performance={"fusedOptimizer": "yes"}), "performance.fusedOptimizer:",
                 id="unknown fused optimizer setting is rejected"),
    pytest.param(with_changes(export={"dir": None, "s3": {"uri": "s3://models/lm"}}),
                 "export: export.s3 needs export.dir, the scratch directory",
                 id="an S3 export without its scratch directory is rejected"),
    pytest.param(with_changes(export={"dir": "/m", "s3": {"uri": "s3://models/lm", "endpoint": "s3.storage:8333"}}),
                 "export.s3.endpoint:", id="an S3 endpoint without its scheme is rejected"),
]


@pytest.mark.parametrize(("raw", "message"), BAD_CONFIGS)
def test_bad_configuration_names_the_setting(raw, message):
    with pytest.raises(ConfigError) as error:
        parse_config(raw)
    assert message in str(error.value)


def test_several_problems_are_reported_together():
    with pytest.raises(ConfigError) as error:
        parse_config(with_changes(deepspeed={"zeroStage": 4, "microBatchSize": 0}))
    assert "deepspeed.zeroStage" in str(error.value) and "deepspeed.microBatchSize" in str(error.value)


def test_camel_and_snake_case_keys_are_equivalent(tmp_path):
    camel = parse_config(with_changes(deepspeed={"zeroStage": 3, "microBatchSize": 4}))
    snake = parse_config(with_changes(deepspeed={"zero_stage": 3, "micro_batch_size": 4}))
    assert camel == snake and camel.config_hash() == snake.config_hash()
    assert camel.config_hash() != parse_config(VALID).config_hash()


def test_config_is_read_from_the_environment_variable(tmp_path, monkeypatch):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(with_changes(deepspeed={"zeroStage": 1})))
    monkeypatch.setenv("STRATA_TRAIN_CONFIG", str(path))
    assert load_config().deepspeed.zero_stage == 1


CLI_FAILURES = [
    pytest.param({"model": {"family": "rnn"}}, "model.family: unknown model family", id="unknown family exits 2"),
    pytest.param({"deepspeed": {"microBatchSize": 0}}, "deepspeed.microBatchSize: must be at least 1, got 0",
                 id="zero batch size exits 2"),
    pytest.param({"deepspeed": {"zeroStage": 4}}, "deepspeed.zeroStage: must be 0..3, got 4",
                 id="zero stage 4 exits 2"),
    pytest.param({"data": {"path": "/nonexistent/dataset"}}, "data.path: /nonexistent/dataset does not exist",
                 id="missing data exits 2"),
    pytest.param({"deepspeed": {"precision": "fp16"}}, "deepspeed.precision: fp16 needs a GPU",
                 id="fp16 without a GPU exits 2",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is valid where a GPU is visible")),
    pytest.param({"validation": {"earlyStopping": {"metric": "accuracy"}}},
                 "validation.earlyStopping.metric: the transformer family reports loss, perplexity",
                 id="early stopping on an unreported metric exits 2"),
    pytest.param({"data": {"packing": True}}, "data.packing: a packed window holds several documents, so it cannot "
                 "be conditioned on one label", id="packing a label-conditioned transformer exits 2"),
]


@pytest.mark.parametrize(("changes", "message"), CLI_FAILURES)
def test_entry_point_fails_fast_with_a_clear_message(tmp_path, text_dataset, changes, message):
    config = {"model": {"family": "transformer"}, "data": {"path": str(text_dataset)},
              "observability": {"metricsPort": 0}}
    for section, values in changes.items():
        config.setdefault(section, {}).update(values)
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    termination = tmp_path / "termination-log"
    completed = subprocess.run(
        [sys.executable, "-m", "strata_workloads.train", "--config", str(tmp_path / "train.yaml")],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "STRATA_TERMINATION_LOG": str(termination)},
    )
    assert completed.returncode == 2, completed.stderr
    assert message in completed.stderr
    failed = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    assert failed and failed[-1]["event"] == "failed" and failed[-1]["reason"] == "InvalidConfiguration"
    result = json.loads(termination.read_text())
    assert result["status"] == "failed" and message in result["error"]
    # Fails before DeepSpeed and the process group start (those take tens of seconds here).
    assert not any(e["event"] == "process" for e in failed)


def test_missing_config_file_names_the_variable(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "STRATA_TRAIN_CONFIG"}
    env["STRATA_TERMINATION_LOG"] = str(tmp_path / "termination-log")
    completed = subprocess.run([sys.executable, "-m", "strata_workloads.train"], capture_output=True, text=True,
                               timeout=60, env=env)
    assert completed.returncode == 2
    assert "STRATA_TRAIN_CONFIG" in completed.stderr


def test_the_pod_launcher_exits_with_the_trainers_invalid_configuration_code(tmp_path):
    """Worker pods run the trainer under torchrun, which alone would exit 1 for any failure; the
    launcher passes the trainer's 2 on, which the Job's podFailurePolicy fails the job on."""
    config = {"model": {"family": "transformer"}, "data": {"path": str(tmp_path / "absent")},
              "observability": {"metricsPort": 0}}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    completed = subprocess.run(
        [sys.executable, "-m", "strata_workloads.train.launch", "--nnodes=1", "--nproc-per-node=1",
         "--master-addr=127.0.0.1", "--master-port=0", "-m", "strata_workloads.train", "--config", str(tmp_path / "train.yaml")],
        capture_output=True, text=True, timeout=180,
        env={**os.environ, "STRATA_TERMINATION_LOG": str(tmp_path / "termination-log")},
    )
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert "data.path" in completed.stderr
