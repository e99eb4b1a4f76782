"""What a FeedbackPolicy's embedding-drift Job reads and what it tells the operator.

The one definition of that contract: the operator renders an :class:`EmbeddingJobConfig` into
a ConfigMap (operator/strata/render/feedback_policy.py) and reads the Job's termination message
back with :func:`parse_result`; the Job (``python -m strata_workloads.monitor.embedding``, in the
embedder image, which carries torch and the sentence-transformers model) reads the config and
writes an :class:`EmbeddingJobResult` with :func:`write_result`. Pydantic only, so the operator
imports it without numpy or torch.

The Job embeds two samples of texts (the reference and the current window's sampled inputs),
clusters one half of the reference in embedding space and counts how the other half and the
current texts fall into those clusters. The operator compares the two count vectors as it
compares token buckets (PSI and a chi-squared test: strata_workloads.monitor.sketch), so the
embedding test joins the drift monitor's other tests under one verdict. Fitting the clusters on
half the reference and counting the other half keeps the test honest: under no drift the
held-out half and the current texts are draws from one distribution, whatever the clusters are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

CONTAINER_NAME = "embedder"
CONFIG_DIR = "/etc/strata/embedding"
CONFIG_FILE = "embedding.json"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_FILE}"
# The reference Dataset version (read-only), and a sentence-transformers model on a volume.
DATASET_DIR = "/var/lib/strata/reference"
MODEL_DIR = "/var/lib/strata/embedding-model"
TERMINATION_LOG_ENV = "STRATA_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
TERMINATION_MESSAGE_LIMIT = 4096
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID_CONFIG = 2

BUILTIN_MODEL = "all-MiniLM-L6-v2"
# What one sampled row may carry into the ConfigMap (which holds at most 1 MiB in all):
# all-MiniLM-L6-v2 reads at most 256 word pieces, about this many characters.
MAX_TEXT_CHARS = 1000
MAX_TOKEN_IDS = 384
MAX_CONFIG_BYTES = 900 * 1024
# The reference half the clusters are fitted on needs this many texts per cluster.
TEXTS_PER_CLUSTER = 5


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Rows(_Camel):
    """Sampled input rows: texts, or token-id sequences (decoded with the Dataset version's tokenizer)."""

    texts: list[str] | None = None
    tokens: list[list[int]] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "Rows":
        if (self.texts is None) == (self.tokens is None):
            raise ValueError("rows hold texts or tokens, exactly one of them")
        return self

    def __len__(self) -> int:
        return len(self.texts if self.texts is not None else self.tokens or [])


class EmbeddingJobConfig(_Camel):
    input: str = Field(min_length=1, max_length=253, description="The model input the rows were sampled from.")
    current: Rows
    # "dataset": the reference is the text column of the Dataset version mounted at DATASET_DIR;
    # "rows": the reference is `reference` (the window before the current one).
    against: Literal["dataset", "rows"]
    reference: Rows | None = None
    # Whether a Dataset version is mounted at DATASET_DIR: the reference (against: dataset), and
    # the tokenizer that turns token-id rows back into text.
    dataset_mounted: bool = False
    sample_size: int = Field(default=500, ge=10, le=5000)
    clusters: int = Field(default=10, ge=2, le=50)
    seed: int = 0
    # A sentence-transformers model directory mounted at MODEL_DIR, instead of the built-in one.
    model_mounted: bool = False

    @model_validator(mode="after")
    def _reference_given(self) -> "EmbeddingJobConfig":
        if self.against == "rows" and self.reference is None:
            raise ValueError("against: rows needs reference rows")
        if self.against == "dataset" and not self.dataset_mounted:
            raise ValueError("against: dataset needs the Dataset version mounted")
        tokens = self.current.tokens is not None or (self.reference is not None and self.reference.tokens is not None)
        if tokens and not self.dataset_mounted:
            raise ValueError("token-id rows need the Dataset version (its tokenizer) mounted")
        return self


class EmbeddingJobResult(_Camel):
    input: str
    model: str
    against: Literal["dataset", "rows"]
    # Texts per cluster: the held-out half of the reference, and the current window.
    reference_counts: list[int] = Field(default_factory=list)
    current_counts: list[int] = Field(default_factory=list)
    # Mean cosine similarity of each side's texts to their nearest cluster centre (for people).
    reference_similarity: float | None = None
    current_similarity: float | None = None
    seconds: float = 0.0
    error: str | None = None

    @property
    def current_rows(self) -> int:
        return sum(self.current_counts)


def config_json(config: EmbeddingJobConfig) -> str:
    return config.model_dump_json(by_alias=True, exclude_none=True)


def read_config(path: str | os.PathLike[str] = CONFIG_PATH) -> EmbeddingJobConfig:
    return EmbeddingJobConfig.model_validate_json(Path(path).read_text())


def format_result(result: EmbeddingJobResult) -> str:
    """The termination message: the result's JSON, its error cut so it fits in 4096 bytes."""
    text = result.model_dump_json(by_alias=True, exclude_none=True)
    if len(text.encode()) > TERMINATION_MESSAGE_LIMIT and result.error:
        text = result.model_copy(update={"error": result.error[:1000]}).model_dump_json(by_alias=True, exclude_none=True)
    return text


def write_result(result: EmbeddingJobResult) -> None:
    path = Path(os.environ.get(TERMINATION_LOG_ENV, DEFAULT_TERMINATION_LOG))
    try:
        path.write_text(format_result(result))
    except OSError:
        pass  # outside a pod (no termination log): stdout has it
    print(format_result(result), flush=True)


def parse_result(message: str | None) -> EmbeddingJobResult | None:
    """The Job's result, or None when the message is not one (a crash's last words)."""
    if not message:
        return None
    try:
        return EmbeddingJobResult.model_validate(json.loads(message))
    except (ValueError, TypeError):
        return None
