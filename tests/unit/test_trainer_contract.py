"""The operator renders the trainer's config file; the trainer must accept every rendering."""

from __future__ import annotations

import copy

import pytest

from strata.api import TRAINING_JOB
from strata.render.trainer import CHECKPOINT_DIR, DATA_DIR, EXPORT_CREDENTIALS_DIR, EXPORT_DIR, render_trainer_config
from strata_workloads.train.config import parse_config
from tests_support import example_spec

BASE = example_spec("TrainingJob")


def variant(**changes) -> dict:
    spec = copy.deepcopy(BASE)
    for path, value in changes.items():
        target = spec
        *parents, leaf = path.split("__")
        for key in parents:
            target = target.setdefault(key, {})
        if value is None:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return spec


SPECS = [
    pytest.param(BASE, id="the example transformer"),
    pytest.param(variant(model={"family": "vae"}), id="a vae"),
    pytest.param(variant(model={"family": "gan", "conditioning": "label"}), id="a label-conditioned gan"),
    pytest.param(variant(model={"family": "diffusion", "size": {"diffusionSteps": 50}}), id="a diffusion model"),
    pytest.param(variant(model={"family": "vae", "size": {"hidden": 102, "latentDim": 16}}),
                 id="a vae whose hidden size no head count divides"),
    pytest.param(variant(deepspeed={"zeroStage": 1, "offload": "cpu", "precision": "fp32"}), id="zero-1 with cpu offload"),
    pytest.param(variant(validation={"everySteps": 10, "earlyStopping": {"metric": "perplexity"}}), id="early stopping on perplexity"),
    pytest.param(variant(export=None, checkpoints=None, validation=None), id="no export and default sections"),
    pytest.param(variant(tracking={"mlflowUri": "http://mlflow.ml:5000", "experiment": "support"}), id="mlflow tracking"),
    pytest.param(variant(export={"tritonRepository": {"pvc": {"claimName": "m"}}, "quantization": "int8"}), id="an int8 export"),
    pytest.param(variant(export={"tritonRepository": {"s3": {"uri": "s3://models/lm", "endpoint": "http://s3.storage:8333",
                                                             "secretRef": {"name": "keys"}}}}), id="an export to S3"),
]


@pytest.mark.parametrize("raw", SPECS)
def test_the_trainer_accepts_every_rendering(raw):
    spec = TRAINING_JOB.spec_model.model_validate(raw)
    config = parse_config(render_trainer_config(spec, "support-lm"))
    assert config.model.family == spec.model.family
    assert config.deepspeed.zero_stage == spec.deepspeed.zero_stage
    assert config.deepspeed.precision == spec.deepspeed.precision
    assert config.hyperparameters.max_steps == spec.hyperparameters.max_steps
    assert config.data.path == DATA_DIR and config.checkpoints.dir == CHECKPOINT_DIR
    assert (config.export.dir == EXPORT_DIR) == (spec.export is not None)


def test_label_conditioning_takes_the_classes_from_the_dataset():
    spec = TRAINING_JOB.spec_model.model_validate(variant(model__conditioning="label"))
    assert parse_config(render_trainer_config(spec, "j")).model.num_classes == -1
    spec = TRAINING_JOB.spec_model.model_validate(variant(model__conditioning="none"))
    assert parse_config(render_trainer_config(spec, "j")).model.num_classes == 0


def test_early_stopping_on_validation_loss_uses_the_trainers_metric_name():
    spec = TRAINING_JOB.spec_model.model_validate(variant(validation={"earlyStopping": {"metric": "valLoss"}}))
    assert parse_config(render_trainer_config(spec, "j")).validation.early_stopping.metric == "loss"


@pytest.mark.parametrize("s3, expected", [
    pytest.param({"uri": "s3://models/lm", "endpoint": "http://s3.storage:8333", "secretRef": {"name": "keys"}},
                 {"uri": "s3://models/lm", "endpoint": "http://s3.storage:8333", "region": None,
                  "credentials_path": EXPORT_CREDENTIALS_DIR},
                 id="with an endpoint and a Secret"),
    pytest.param({"uri": "s3://models/lm"},
                 {"uri": "s3://models/lm", "endpoint": None, "region": None, "credentials_path": None},
                 id="on AWS with the pod's own credentials"),
])
def test_an_s3_export_is_written_to_the_scratch_directory_and_uploaded(s3, expected):
    spec = TRAINING_JOB.spec_model.model_validate(variant(export={"tritonRepository": {"s3": s3}}))
    export = parse_config(render_trainer_config(spec, "lm")).export
    assert export.dir == EXPORT_DIR and export.s3.model_dump() == expected


def test_the_export_is_named_after_the_job():
    spec = TRAINING_JOB.spec_model.model_validate(BASE)
    assert parse_config(render_trainer_config(spec, "support-lm")).export.model_name == "support-lm"


@pytest.mark.parametrize(
    "model, expected",
    [
        pytest.param({"family": "transformer", "size": {"layers": 2}},
                     {"layers": 2, "hidden": 512, "heads": 8, "contextLength": 512}, id="a transformer gets its own defaults"),
        pytest.param({"family": "gan"}, {"hidden": 512, "latentDim": 64}, id="a gan gets hidden and latent size only"),
        pytest.param({"family": "diffusion", "size": {"diffusionSteps": 50}}, {"diffusionSteps": 50},
                     id="a diffusion model gets its schedule length only"),
    ],
)
def test_each_family_is_rendered_only_the_size_settings_it_reads(model, expected):
    spec = TRAINING_JOB.spec_model.model_validate(variant(model=model))
    assert spec.to_wire()["model"]["size"] == model.get("size", {})  # no other family's defaults in the object
    rendered = render_trainer_config(spec, "j")["model"]["size"]
    assert rendered == expected
    trainer_size = parse_config(render_trainer_config(spec, "j")).model.size.model_dump(by_alias=True)
    assert {name: trainer_size[name] for name in expected} == expected  # the trainer reads what was rendered
