"""Decoder-only transformer: causal self-attention, pre-norm residual blocks, label-prefix conditioning."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint

from strata_workloads.train.data import BOS_ID, PAD_ID, decode, document_positions, encode
from strata_workloads.train.config import FAMILY_METRICS
from strata_workloads.train.device import module_device
from strata_workloads.train.models.base import ModelFamily, ServingSpec, TensorSpec

# performance.attention -> the SDPA kernels allowed (None: torch chooses among all of them).
ATTENTION_KERNELS: dict[str, list[SDPBackend] | None] = {
    "auto": None,
    "flash": [SDPBackend.FLASH_ATTENTION],
    "math": [SDPBackend.MATH],
}


def document_causal_mask(segments: torch.Tensor) -> torch.Tensor:
    """``[B, 1, T, T]`` boolean: position i may attend to j when j <= i and both are in one document."""
    length = segments.shape[1]
    causal = torch.ones((length, length), dtype=torch.bool, device=segments.device).tril()
    same_document = segments.unsqueeze(2) == segments.unsqueeze(1)
    return (same_document & causal).unsqueeze(1)


class CausalSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float, attention: str = "auto"):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.dropout = dropout
        self.kernels = ATTENTION_KERNELS[attention]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, hidden = x.shape
        q, k, v = self.qkv(x).split(hidden, dim=2)
        # [B, T, H*D] -> [B, H, T, D]
        q, k, v = (t.view(batch, length, self.heads, hidden // self.heads).transpose(1, 2) for t in (q, k, v))
        dropout = self.dropout if self.training else 0.0
        if self.kernels is None:
            attended = self._attend(q, k, v, mask, dropout)
        else:
            with sdpa_kernel(self.kernels):
                attended = self._attend(q, k, v, mask, dropout)
        return self.proj(attended.transpose(1, 2).reshape(batch, length, hidden))

    @staticmethod
    def _attend(q, k, v, mask, dropout):
        # Without a mask the causal flag lets SDPA pick its fastest (flash) kernel.
        if mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float, attention: str = "auto"):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.attention = CausalSelfAttention(hidden, heads, dropout, attention)
        self.norm2 = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # Pre-norm residual connections keep gradients flowing through deep stacks.
        x = x + self.drop(self.attention(self.norm1(x), mask))
        return x + self.drop(self.mlp(self.norm2(x)))


class DecoderTransformer(nn.Module):
    """Maps tokens ``[B, T]`` (and labels ``[B]``) to next-token logits ``[B, T, vocab]``.

    With ``num_classes > 0`` a learned label embedding is prepended as a prefix position, so
    every token attends to the label; its own output is dropped.
    """

    def __init__(self, vocab_size: int, context_length: int, layers: int, hidden: int, heads: int,
                 dropout: float, num_classes: int, attention: str = "auto", checkpoint_blocks: bool = False):
        super().__init__()
        self.context_length = context_length
        self.num_classes = num_classes
        # Recompute each block in the backward pass instead of keeping its activations.
        self.checkpoint_blocks = checkpoint_blocks
        self.token_embedding = nn.Embedding(vocab_size, hidden)
        self.position_embedding = nn.Embedding(context_length + 1, hidden)  # +1 for the label prefix
        self.label_embedding = nn.Embedding(num_classes, hidden) if num_classes > 0 else None
        self.blocks = nn.ModuleList(Block(hidden, heads, dropout, attention) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, vocab_size, bias=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor | None = None,
                segments: torch.Tensor | None = None) -> torch.Tensor:
        """``segments`` (packed windows, ``[B, T]`` document numbers): attention and positions
        stay within each document, as if each were its own sequence."""
        x = self.token_embedding(tokens)
        if self.label_embedding is not None:
            assert labels is not None, "this model is label-conditioned"
            assert segments is None, "packed windows carry no label"
            x = torch.cat([self.label_embedding(labels.view(-1)).unsqueeze(1), x], dim=1)
        mask = None
        if segments is None:
            positions = torch.arange(x.shape[1], device=tokens.device)
        else:
            positions = document_positions(segments)
            mask = document_causal_mask(segments)
        x = x + self.position_embedding(positions)
        recompute = self.checkpoint_blocks and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            if recompute:
                x = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, mask)
        logits = self.head(self.norm(x))
        if self.label_embedding is not None:
            logits = logits[:, 1:]
        return logits


class _ServingWrapper(nn.Module):
    """Triton signature: ``tokens`` INT64 [B, T] (+ ``label`` INT64 [B, 1]) -> ``logits`` FP32."""

    def __init__(self, model: DecoderTransformer):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.model(tokens, label).float()


class _UnconditionalServingWrapper(nn.Module):
    def __init__(self, model: DecoderTransformer):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(tokens).float()


class TransformerFamily(ModelFamily):
    name = "transformer"
    modality = "text"
    metric_names = FAMILY_METRICS["transformer"]

    def build(self) -> dict[str, nn.Module]:
        s, performance = self.size, self.config.performance
        return {
            "model": DecoderTransformer(
                self.info.vocab_size, s.context_length, s.layers, s.hidden, s.heads, s.dropout, self.num_classes,
                attention=performance.attention, checkpoint_blocks=performance.activation_checkpointing,
            )
        }

    def blocks(self, module):
        return list(module.blocks)

    def _loss_terms(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, mask = batch["tokens"], batch["mask"]
        if self.config.data.document_attention:
            logits = model(tokens[:, :-1], None, batch["segments"][:, :-1]).float()
        else:
            logits = model(tokens[:, :-1], self.labels_of(batch)).float()
        targets = tokens[:, 1:].masked_fill(~mask[:, 1:], -100)
        loss_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                   ignore_index=-100, reduction="sum")
        return loss_sum, mask[:, 1:].sum()

    def train_micro_step(self, engines, batch, generator):
        engine = engines["model"]
        loss_sum, count = self._loss_terms(engine, batch)
        loss = loss_sum / count.clamp(min=1)
        engine.backward(loss)
        engine.step()
        return {"loss": loss.detach()}

    @torch.no_grad()
    def evaluate(self, modules, batch, generator):
        loss_sum, count = self._loss_terms(modules["model"], batch)
        return {"loss": (loss_sum, count)}

    def finalize_metrics(self, means):
        # exp of the mean token cross-entropy; capped so a diverged run still logs a number.
        return {**means, "perplexity": math.exp(min(means["loss"], 50.0))}

    def tokens_in(self, batch):
        return int(batch["mask"][:, 1:].sum())  # targets that are real tokens, not padding

    def serving(self, modules) -> ServingSpec:
        model = modules["model"]
        device = module_device(model)
        example_tokens = torch.tensor([[BOS_ID] + encode("strata")], dtype=torch.long, device=device)
        logits = TensorSpec("logits", "TYPE_FP32", (-1, self.info.vocab_size))
        tokens = TensorSpec("tokens", "TYPE_INT64", (-1,))
        notes = {"tokenizer": "bytes", "bosId": BOS_ID, "padId": PAD_ID, "contextLength": model.context_length}
        if self.num_classes > 0:
            return ServingSpec(
                _ServingWrapper(model), [tokens, TensorSpec("label", "TYPE_INT64", (1,))], [logits],
                (example_tokens, torch.zeros((1, 1), dtype=torch.long, device=device)), notes,
            )
        return ServingSpec(_UnconditionalServingWrapper(model), [tokens], [logits], (example_tokens,), notes)

    @torch.no_grad()
    def continue_text(self, model: nn.Module, prompt: str, new_tokens: int, generator: torch.Generator,
                      label: int | None = None, temperature: float = 0.8) -> str:
        device = module_device(model)
        ids = torch.tensor([BOS_ID] + encode(prompt), dtype=torch.long, device=device)
        labels = (torch.tensor([label if label is not None else 0], device=device)
                  if self.num_classes > 0 else None)
        for _ in range(new_tokens):
            window = ids[-model.context_length:].unsqueeze(0)
            logits = model(window, labels)[0, -1].float()
            logits[256:] = float("-inf")  # only byte tokens in the continuation
            probabilities = torch.softmax(logits / temperature, dim=-1)
            # Sampled on the device with the device's generator: no host round trip per token.
            ids = torch.cat([ids, torch.multinomial(probabilities, 1, generator=generator)])
        return decode(ids[1:].tolist())

    @torch.no_grad()
    def generate(self, modules, count, generator) -> dict[str, Any]:
        model = modules["model"]
        samples = []
        for index in range(count):
            label = index % self.num_classes if self.num_classes > 0 else None
            prompt = "The "
            samples.append({"prompt": prompt, "label": label,
                            "text": self.continue_text(model, prompt, 32, generator, label)})
        return {"text": samples}
