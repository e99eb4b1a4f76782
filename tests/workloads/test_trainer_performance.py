"""The speed knobs (``performance`` section) each do what they say, without changing the result."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from strata_workloads.train.config import ConfigError, parse_config
from strata_workloads.train.data import DataInfo
from strata_workloads.train.models import make_family
from strata_workloads.train.trainer import compile_blocks, fused_adamw_supported, make_optimizer

TEXT = DataInfo(modality="text", num_classes=0, dataset_name="t", dataset_version="v")
IMAGE = DataInfo(modality="image", num_classes=0, dataset_name="i", dataset_version="v", image_shape=(1, 8, 8))


def build(family: str = "transformer", **performance):
    config = parse_config({"model": {"family": family, "numClasses": 0,
                                     "size": {"layers": 2, "hidden": 32, "heads": 2, "contextLength": 16,
                                              "baseChannels": 8, "diffusionSteps": 10}},
                           "data": {"path": "/unused"}, "performance": performance})
    family_ = make_family(config, TEXT if family == "transformer" else IMAGE)
    torch.manual_seed(0)
    return config, family_, family_.build()["model"]


def transformer_loss(model) -> torch.Tensor:
    tokens = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))
    return model(tokens).float().logsumexp(-1).mean()


# Fused optimizer --------------------------------------------------------------------------------

@pytest.mark.parametrize(("setting", "fused"), [
    pytest.param("auto", True, id="auto uses the fused step where torch has one for the device"),
    pytest.param("on", True, id="on uses the fused step"),
    pytest.param("off", None, id="off leaves torch its foreach step"),
])
def test_fused_optimizer_setting_chooses_the_adamw_step(setting, fused):
    assert fused_adamw_supported(torch.device("cpu")), "this torch has fused AdamW for CPU parameters"
    config, _, model = build(fusedOptimizer=setting)
    assert make_optimizer(model, config, torch.device("cpu")).defaults["fused"] is fused


def test_fused_optimizer_on_fails_where_the_device_has_no_fused_kernel():
    config, _, model = build(fusedOptimizer="on")
    with pytest.raises(ConfigError, match="performance.fusedOptimizer: .* no fused AdamW for meta parameters"):
        make_optimizer(model, config, torch.device("meta"))
    # auto falls back quietly instead.
    auto, _, model = build()
    assert make_optimizer(model, auto, torch.device("meta")).defaults["fused"] is None


def test_fused_and_foreach_steps_agree():
    results = []
    for setting in ("on", "off"):
        config, _, model = build(fusedOptimizer=setting)
        optimizer = make_optimizer(model, config, torch.device("cpu"))
        for _ in range(3):
            optimizer.zero_grad()
            transformer_loss(model).backward()
            optimizer.step()
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(results[0], results[1], atol=1e-6)


# Attention kernel -------------------------------------------------------------------------------

class AttentionOps(TorchDispatchMode):
    """Records the fused attention kernels that run (the math kernel decomposes into matmuls)."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "scaled_dot_product" in str(func):
            self.seen.add(str(func).split(".")[1])
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(("attention", "kernels"), [
    pytest.param("auto", {"_scaled_dot_product_flash_attention_for_cpu",
                          "_scaled_dot_product_flash_attention_for_cpu_backward"}, id="auto lets torch pick flash"),
    pytest.param("flash", {"_scaled_dot_product_flash_attention_for_cpu",
                           "_scaled_dot_product_flash_attention_for_cpu_backward"}, id="flash runs the flash kernel"),
    pytest.param("math", set(), id="math runs the unfused reference"),
])
def test_attention_setting_selects_the_kernel(attention, kernels):
    _, _, model = build(attention=attention)
    with AttentionOps() as ops:
        transformer_loss(model).backward()
    assert ops.seen == kernels


def test_attention_kernels_agree():
    losses = [transformer_loss(build(attention=kernel)[2]).item() for kernel in ("flash", "math")]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)


# Activation checkpointing -----------------------------------------------------------------------

def saved_activation_bytes(model, loss_fn) -> tuple[int, list[torch.Tensor]]:
    """Bytes autograd keeps for the backward pass (excluding parameters), and the gradients."""
    parameters = {p.data_ptr() for p in model.parameters()}
    saved = []

    def pack(tensor):
        if tensor.data_ptr() not in parameters:
            saved.append(tensor.numel() * tensor.element_size())
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = loss_fn(model)
    loss.backward()
    return sum(saved), [p.grad.clone() for p in model.parameters()]


def unet_loss(model) -> torch.Tensor:
    generator = torch.Generator().manual_seed(2)
    images = torch.randn((4, 1, 8, 8), generator=generator)
    return model(images, torch.tensor([1, 2, 3, 4])).pow(2).mean()


@pytest.mark.parametrize(("family", "loss_fn"), [
    pytest.param("transformer", transformer_loss, id="transformer blocks are recomputed"),
    pytest.param("diffusion", unet_loss, id="U-Net residual blocks are recomputed"),
])
def test_activation_checkpointing_keeps_less_for_backward_and_gives_the_same_gradients(family, loss_fn):
    kept, gradients = saved_activation_bytes(build(family)[2], loss_fn)
    kept_checkpointed, gradients_checkpointed = saved_activation_bytes(
        build(family, activationCheckpointing=True)[2], loss_fn)
    assert kept_checkpointed < 0.6 * kept, (kept_checkpointed, kept)
    for plain, recomputed in zip(gradients, gradients_checkpointed, strict=True):
        assert torch.allclose(plain, recomputed, atol=1e-6)


# torch.compile ----------------------------------------------------------------------------------

def test_compile_compiles_each_block_in_place():
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    _, family, compiled = build(compile=True)
    _, _, eager = build()
    names = list(compiled.state_dict())
    # Inductor's code generation takes minutes on a shared CPU; the capture (what the setting
    # changes in the trainer) is the same with the eager backend. The GPU tests run inductor.
    assert compile_blocks(family, compiled, backend="eager") == 2
    assert torch.allclose(transformer_loss(compiled), transformer_loss(eager), atol=1e-6)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert list(compiled.state_dict()) == names  # checkpoints and export see the same parameter names
