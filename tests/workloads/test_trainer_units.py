"""Pure functions and single-process model behaviour (no DeepSpeed, no subprocesses)."""

from __future__ import annotations

import json

import pytest
import torch

from strata_workloads.train.config import Hyperparameters, parse_config
from strata_workloads.train.data import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    DataInfo,
    ShardedSampler,
    Split,
    decode,
    encode,
    stream_examples,
    text_examples,
    validation_batches,
)
from strata_workloads.train.export import metric_change, next_version, quantize_modules, render_config_pbtxt, trace
from strata_workloads.train.models import make_family
from strata_workloads.train.models.gan import moment_distance
from strata_workloads.train.reporting import TERMINATION_MESSAGE_LIMIT, encode_termination_message
from strata_workloads.train.schedule import learning_rate_at
from strata_workloads.train.trainer import EarlyStopping, deepspeed_config, step_seed

TEXT_INFO = DataInfo(modality="text", num_classes=2, dataset_name="t", dataset_version="v1")
IMAGE_INFO = DataInfo(modality="image", num_classes=2, dataset_name="i", dataset_version="v1", image_shape=(1, 8, 8))


def family_for(name: str, **size):
    config = parse_config({"model": {"family": name, "size": {"hidden": 32, "heads": 2, "contextLength": 16,
                                                              "latentDim": 4, "baseChannels": 8,
                                                              "diffusionSteps": 10, **size}},
                           "data": {"path": "/unused"}})
    family = make_family(config, TEXT_INFO if name == "transformer" else IMAGE_INFO)
    torch.manual_seed(0)
    return family, {k: m.eval() for k, m in family.build().items()}


# Schedule -------------------------------------------------------------------------------------

def test_warmup_is_linear_and_cosine_decays_to_the_minimum():
    hp = Hyperparameters(learning_rate=1.0, min_learning_rate=0.1, warmup_steps=4, max_steps=14, decay="cosine")
    assert [learning_rate_at(s, hp) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert learning_rate_at(9, hp) == pytest.approx(0.55)  # half-way through the decay
    assert learning_rate_at(14, hp) == pytest.approx(0.1)
    assert learning_rate_at(100, hp) == pytest.approx(0.1)


def test_linear_and_constant_decay():
    linear = Hyperparameters(learning_rate=2.0, max_steps=10, decay="linear")
    assert [learning_rate_at(s, linear) for s in (0, 5, 10)] == pytest.approx([2.0, 1.0, 0.0])
    constant = Hyperparameters(learning_rate=2.0, max_steps=10, decay="constant")
    assert learning_rate_at(7, constant) == 2.0


# Data -----------------------------------------------------------------------------------------

def test_byte_tokenizer_round_trips_utf8():
    assert decode(encode("naïve café")) == "naïve café"
    assert decode([BOS_ID, *encode("ok"), EOS_ID, PAD_ID]) == "ok"


def test_text_examples_pad_and_mask():
    examples = text_examples(["ab", "abcdefgh"], context_length=4)
    assert examples["tokens"].tolist() == [[BOS_ID, 97, 98, EOS_ID, PAD_ID], [BOS_ID, 97, 98, 99, 100]]
    assert examples["mask"].tolist() == [[True] * 4 + [False], [True] * 5]
    windows = stream_examples("abcdefghij", context_length=2)
    assert windows["tokens"].tolist() == [[97, 98, 99], [100, 101, 102], [103, 104, 105]]


def test_ranks_see_disjoint_data_covering_the_epoch():
    seen = []
    for rank in range(2):
        sampler = ShardedSampler(dataset_size=20, batch_size=3, rank=rank, world_size=2, seed=7)
        iterator = iter(sampler)
        seen.append([i for _ in range(sampler.batches_per_epoch) for i in next(iterator)])
    assert not set(seen[0]) & set(seen[1])
    assert len(seen[0]) == len(seen[1]) == 9  # 3 batches of 3 per rank; the last 2 examples dropped


def test_sampler_resumes_the_exact_sequence():
    reference = ShardedSampler(17, 2, rank=1, world_size=2, seed=3)
    iterator = iter(reference)
    expected = [next(iterator) for _ in range(11)]  # crosses an epoch boundary (4 batches/epoch)
    resumed = ShardedSampler(17, 2, rank=1, world_size=2, seed=3)
    consumed = iter(resumed)
    for _ in range(6):
        next(consumed)
    restarted = ShardedSampler(17, 2, rank=1, world_size=2, seed=3)
    restarted.load_state_dict(resumed.state_dict())
    iterator = iter(restarted)
    assert [next(iterator) for _ in range(5)] == expected[6:]


def test_validation_batches_are_equal_in_number_on_every_rank():
    split = Split({"x": torch.arange(11)})
    per_rank = [validation_batches(split, batch_size=2, rank=r, world_size=2, max_batches=10) for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == 3
    assert not set(sum(per_rank[0], [])) & set(sum(per_rank[1], []))


# Models ---------------------------------------------------------------------------------------

def test_attention_is_causal():
    family, modules = family_for("transformer")
    model = modules["model"]
    tokens = torch.randint(0, 256, (1, 12))
    changed = tokens.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 256
    labels = torch.tensor([1])
    with torch.no_grad():
        before, after = model(tokens, labels), model(changed, labels)
    assert torch.allclose(before[0, :8], after[0, :8], atol=1e-6)
    assert not torch.allclose(before[0, 8:], after[0, 8:])


def test_label_prefix_conditions_every_position():
    _, modules = family_for("transformer")
    tokens = torch.randint(0, 256, (1, 6))
    with torch.no_grad():
        zero, one = modules["model"](tokens, torch.tensor([0])), modules["model"](tokens, torch.tensor([1]))
    assert zero.shape == (1, 6, 259)
    assert (zero - one).abs().amax(dim=-1).min() > 0


def test_unet_keeps_shape_and_uses_timestep_and_class():
    _, modules = family_for("diffusion")
    unet = modules["model"]
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        out = unet(x, torch.tensor([1, 1]), torch.tensor([0, 0]))
        other_time = unet(x, torch.tensor([7, 7]), torch.tensor([0, 0]))
        other_class = unet(x, torch.tensor([1, 1]), torch.tensor([1, 1]))
    assert out.shape == x.shape
    assert not torch.allclose(out, other_time) and not torch.allclose(out, other_class)


@pytest.mark.parametrize("name", ["vae", "gan", "diffusion"])
def test_image_families_sample_images_in_range(name):
    family, modules = family_for(name)
    samples = family.generate(modules, 3, torch.Generator().manual_seed(0))
    assert samples["images"].shape == (3, 1, 8, 8)
    assert samples["images"].abs().max() <= 1.0
    assert samples["labels"].tolist() == [0, 1, 0]


def test_vae_loss_is_reconstruction_plus_kl():
    family, modules = family_for("vae")
    batch = {"image": torch.rand(4, 1, 8, 8) * 2 - 1, "label": torch.tensor([0, 1, 0, 1])}
    metrics = {k: float(total) for k, (total, _count) in
               family.evaluate(modules, batch, torch.Generator().manual_seed(0)).items()}
    assert metrics["loss"] == pytest.approx(metrics["reconstruction"] + metrics["kl"], rel=1e-5)
    assert metrics["kl"] >= 0


def test_moment_distance_is_zero_for_identical_batches():
    images = torch.randn(6, 1, 4, 4)
    assert moment_distance(images, images).item() == pytest.approx(0.0)
    assert moment_distance(images, images + 1).item() == pytest.approx(1.0, rel=1e-5)


# Export ---------------------------------------------------------------------------------------

def test_traced_transformer_accepts_other_sequence_lengths_and_batches():
    family, modules = family_for("transformer")
    spec = family.serving(modules)
    traced = trace(spec)
    tokens = torch.randint(0, 256, (3, 9))
    labels = torch.tensor([[0], [1], [1]])
    with torch.no_grad():
        assert torch.allclose(traced(tokens, labels), modules["model"](tokens, labels.view(-1)), atol=1e-5)


@pytest.mark.parametrize("kind", ["int8", "fp16", "bf16"])
def test_quantized_modules_trace_and_stay_close(kind):
    family, modules = family_for("vae")
    quantized = quantize_modules(modules, kind)
    latent = torch.randn(2, 4)
    labels = torch.tensor([[0], [1]])
    with torch.no_grad():
        reference = family.serving(modules).module(latent, labels)
        traced = trace(family.serving(quantized))
        output = traced(latent, labels)
    assert output.dtype == torch.float32
    assert (output - reference).abs().max() < 0.1


def test_config_pbtxt_lists_inputs_outputs_and_batching():
    family, modules = family_for("diffusion")
    text = render_config_pbtxt("unet", family.serving(modules), max_batch_size=4, python_backend=False)
    assert 'name: "noisy_image"' in text and "dims: [ 1, 8, 8 ]" in text
    assert 'name: "timestep"' in text and "data_type: TYPE_INT64" in text
    assert "max_batch_size: 4" in text and "dynamic_batching" in text


def test_next_version_follows_the_highest_numeric_directory(tmp_path):
    assert next_version(tmp_path / "absent") == 1
    for name in ("1", "3", "notes"):
        (tmp_path / name).mkdir()
    assert next_version(tmp_path) == 4


def test_metric_change_is_quantized_minus_baseline():
    assert metric_change({"loss": 1.0, "perplexity": 2.0}, {"loss": 1.25, "perplexity": 2.5}) == {
        "loss": 0.25, "perplexity": 0.5}


# Trainer pieces -------------------------------------------------------------------------------

def test_deepspeed_config_translates_the_section():
    config = parse_config({"model": {"family": "vae"}, "data": {"path": "/x"},
                           "deepspeed": {"zeroStage": 3, "precision": "bf16", "microBatchSize": 4,
                                         "gradientAccumulation": 3, "offload": "cpu", "gradientClipping": 0.5}})
    ds = deepspeed_config(config)
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["gradient_accumulation_steps"] == 3
    assert ds["zero_optimization"] == {"stage": 3, "offload_optimizer": {"device": "cpu"},
                                       "offload_param": {"device": "cpu"}}
    assert ds["bf16"] == {"enabled": True} and ds["fp16"]["enabled"] is False
    assert ds["gradient_clipping"] == 0.5


def test_early_stopping_counts_validations_without_improvement():
    stopping = EarlyStopping(metric="loss", patience=2, mode="min", min_delta=0.01)
    assert [stopping.update(v) for v in (1.0, 0.9, 0.895, 0.95)] == [False, False, False, True]
    restored = EarlyStopping(metric="loss", patience=2, mode="min", min_delta=0.01)
    stopping_state = EarlyStopping(metric="loss", patience=2, mode="min", min_delta=0.01)
    stopping_state.update(1.0)
    stopping_state.update(1.0)
    restored.load_state_dict(stopping_state.state_dict())
    assert restored.update(1.0) is True


def test_step_seeds_differ_by_rank_and_step():
    seeds = {step_seed(1, rank, step, micro) for rank in range(2) for step in range(50) for micro in range(2)}
    assert len(seeds) == 200


def test_termination_message_stays_under_the_kubernetes_limit():
    result = {"status": "succeeded", "step": 3, "metrics": {"loss": float("nan")},
              "export": {"models": {str(i): "/very/long/path" * 20 for i in range(30)}}}
    message = encode_termination_message(result)
    assert len(message.encode()) <= TERMINATION_MESSAGE_LIMIT
    decoded = json.loads(message)
    assert decoded["status"] == "succeeded" and decoded["export"] == "omitted: message too long"
    assert decoded["metrics"] == {"loss": "nan"}


# Plain-file quick starts and data/model mismatches ----------------------------------------------

def test_plain_text_file_is_cut_into_windows(tmp_path):
    from strata_workloads.train.data import load_training_data

    (tmp_path / "corpus.txt").write_text("hello strata " * 40)  # 520 bytes
    config = parse_config({"model": {"family": "transformer", "size": {"contextLength": 15}},
                           "data": {"path": str(tmp_path / "corpus.txt"), "validationFraction": 0.25}})
    data = load_training_data(config)
    assert (len(data.train), len(data.validation)) == (24, 8)  # 520 // 16 = 32 windows
    assert data.train.tensors["tokens"].shape == (24, 16)
    assert data.info.num_classes == 0 and data.info.dataset_version == "plain-files"


def test_plain_numpy_images_with_labels(tmp_path):
    import numpy as np

    from strata_workloads.train.data import load_training_data

    np.save(tmp_path / "bars.npy", np.zeros((10, 1, 4, 4), dtype=np.float32))
    np.save(tmp_path / "bars.labels.npy", np.arange(10) % 3)
    config = parse_config({"model": {"family": "gan"}, "data": {"path": str(tmp_path), "validationFraction": 0.2}})
    data = load_training_data(config)
    assert data.info.image_shape == (1, 4, 4) and data.info.num_classes == 3
    assert (len(data.train), len(data.validation)) == (8, 2)


def test_family_and_dataset_modality_must_match(tmp_path):
    from strata_workloads.data.synthetic import write_text_dataset
    from strata_workloads.train.config import ConfigError
    from strata_workloads.train.data import load_training_data

    write_text_dataset(tmp_path / "text", train_rows=8, validation_rows=4)
    config = parse_config({"model": {"family": "diffusion"}, "data": {"path": str(tmp_path / "text")}})
    with pytest.raises(ConfigError, match="data.path: the diffusion family needs an image dataset"):
        load_training_data(config)
