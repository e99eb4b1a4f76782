"""Decoder-only transformer: causal self-attention, pre-norm residual blocks, label-prefix conditioning."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from strata_workloads.train.data import BOS_ID, PAD_ID, decode, encode
from strata_workloads.train.models.base import ModelFamily, ServingSpec, TensorSpec


class CausalSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        q, k, v = self.qkv(x).split(hidden, dim=2)
        # [B, T, H*D] -> [B, H, T, D]
        q, k, v = (t.view(batch, length, self.heads, hidden // self.heads).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(attended.transpose(1, 2).reshape(batch, length, hidden))


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.attention = CausalSelfAttention(hidden, heads, dropout)
        self.norm2 = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Pre-norm residual connections keep gradients flowing through deep stacks.
        x = x + self.drop(self.attention(self.norm1(x)))
        return x + self.drop(self.mlp(self.norm2(x)))


class DecoderTransformer(nn.Module):
    """Maps tokens ``[B, T]`` (and labels ``[B]``) to next-token logits ``[B, T, vocab]``.

    With ``num_classes > 0`` a learned label embedding is prepended as a prefix position, so
    every token attends to the label; its own output is dropped.
    """

    def __init__(self, vocab_size: int, context_length: int, layers: int, hidden: int, heads: int,
                 dropout: float, num_classes: int):
        super().__init__()
        self.context_length = context_length
        self.num_classes = num_classes
        self.token_embedding = nn.Embedding(vocab_size, hidden)
        self.position_embedding = nn.Embedding(context_length + 1, hidden)  # +1 for the label prefix
        self.label_embedding = nn.Embedding(num_classes, hidden) if num_classes > 0 else None
        self.blocks = nn.ModuleList(Block(hidden, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, vocab_size, bias=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self.token_embedding(tokens)
        if self.label_embedding is not None:
            assert labels is not None, "this model is label-conditioned"
            x = torch.cat([self.label_embedding(labels.view(-1)).unsqueeze(1), x], dim=1)
        positions = torch.arange(x.shape[1], device=tokens.device)
        x = x + self.position_embedding(positions)
        for block in self.blocks:
            x = block(x)
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
    metric_names = ("loss", "perplexity")

    def build(self) -> dict[str, nn.Module]:
        s = self.size
        return {
            "model": DecoderTransformer(
                self.info.vocab_size, s.context_length, s.layers, s.hidden, s.heads, s.dropout, self.num_classes
            )
        }

    def _loss_terms(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, mask = batch["tokens"], batch["mask"]
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
        return {"loss": loss.item()}

    @torch.no_grad()
    def evaluate(self, modules, batch, generator):
        loss_sum, count = self._loss_terms(modules["model"], batch)
        return {"loss": (loss_sum.item(), float(count))}

    def finalize_metrics(self, means):
        # exp of the mean token cross-entropy; capped so a diverged run still logs a number.
        return {**means, "perplexity": math.exp(min(means["loss"], 50.0))}

    def tokens_in(self, batch):
        return int(batch["mask"][:, 1:].sum())

    def serving(self, modules) -> ServingSpec:
        model = modules["model"]
        example_tokens = torch.tensor([[BOS_ID] + encode("strata")], dtype=torch.long)
        logits = TensorSpec("logits", "TYPE_FP32", (-1, self.info.vocab_size))
        tokens = TensorSpec("tokens", "TYPE_INT64", (-1,))
        notes = {"tokenizer": "bytes", "bosId": BOS_ID, "padId": PAD_ID, "contextLength": model.context_length}
        if self.num_classes > 0:
            return ServingSpec(
                _ServingWrapper(model), [tokens, TensorSpec("label", "TYPE_INT64", (1,))], [logits],
                (example_tokens, torch.zeros((1, 1), dtype=torch.long)), notes,
            )
        return ServingSpec(_UnconditionalServingWrapper(model), [tokens], [logits], (example_tokens,), notes)

    @torch.no_grad()
    def continue_text(self, model: nn.Module, prompt: str, new_tokens: int, generator: torch.Generator,
                      label: int | None = None, temperature: float = 0.8) -> str:
        ids = [BOS_ID] + encode(prompt)
        labels = torch.tensor([label if label is not None else 0]) if self.num_classes > 0 else None
        for _ in range(new_tokens):
            window = torch.tensor([ids[-model.context_length:]])
            logits = model(window, labels)[0, -1].float()
            logits[256:] = float("-inf")  # only byte tokens in the continuation
            probabilities = torch.softmax(logits / temperature, dim=-1)
            ids.append(int(torch.multinomial(probabilities, 1, generator=generator)))
        return decode(ids[1:])

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
