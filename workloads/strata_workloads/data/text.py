"""Text steps: normalization, the dedup key, noise filters, tokenizers and seeded augmentation."""

from __future__ import annotations

import functools
import hashlib
import random
import re
import unicodedata
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from strata_workloads.data.config import NoiseFilters, TextAugmentation, TextPreprocessing, Tokenizer
from strata_workloads.monitor import sketch

MASK_TOKEN = "[MASK]"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", MASK_TOKEN]
_WHITESPACE = re.compile(r"\s+")

# A small built-in synonym table (no WordNet download in a pod); groups are symmetric.
_SYNONYM_GROUPS = [
    ["big", "large", "huge"], ["small", "little", "tiny"], ["fast", "quick", "rapid"], ["slow", "sluggish"],
    ["happy", "glad", "joyful"], ["sad", "unhappy", "gloomy"], ["good", "fine", "great"], ["bad", "poor", "awful"],
    ["begin", "start"], ["end", "finish"], ["buy", "purchase"], ["help", "assist", "aid"], ["show", "display"],
    ["smart", "clever", "bright"], ["easy", "simple"], ["hard", "difficult"], ["old", "aged"], ["new", "fresh"],
    ["car", "automobile"], ["house", "home"], ["road", "street"], ["answer", "reply", "response"],
    ["ask", "inquire"], ["look", "glance"], ["walk", "stroll"], ["run", "sprint", "dash"], ["jump", "leap"],
    ["talk", "speak"], ["say", "state"], ["sofa", "couch"], ["mat", "rug"], ["cat", "kitten"], ["dog", "puppy"],
]
SYNONYMS: dict[str, list[str]] = {
    word: [other for other in group if other != word] for group in _SYNONYM_GROUPS for word in group
}


def normalize(text: str, preprocessing: TextPreprocessing) -> str:
    if preprocessing.normalize != "none":
        text = unicodedata.normalize(preprocessing.normalize, text)
    if preprocessing.lowercase:
        text = text.lower()
    if preprocessing.strip_stopwords:
        text = _WHITESPACE.sub(" ", _stop_words().sub("", text))
    return text.strip()


@functools.cache
def _stop_words() -> re.Pattern[str]:
    """English stop words as whole words, any case: scikit-learn's list (imported only when asked)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    words = sorted(ENGLISH_STOP_WORDS, key=lambda word: (-len(word), word))  # longest first
    return re.compile(r"\b(?:" + "|".join(map(re.escape, words)) + r")\b", re.IGNORECASE)


def content_key(text: str) -> bytes:
    """Exact-dedup key: case and whitespace differences do not make content new."""
    return hashlib.blake2b(_WHITESPACE.sub(" ", text.casefold()).strip().encode("utf-8"), digest_size=16).digest()


class Filters:
    """The noise filters; ``reason`` returns why a text is dropped, or None to keep it."""

    def __init__(self, filters: NoiseFilters):
        self.filters = filters
        self.patterns = [re.compile(pattern) for pattern in filters.drop_patterns]

    def reason(self, text: str) -> str | None:
        f = self.filters
        if f.min_length is not None and len(text) < f.min_length:
            return "tooShort"
        if f.max_length is not None and len(text) > f.max_length:
            return "tooLong"
        if f.max_non_alpha_ratio is not None and text:
            alpha = sum(1 for char in text if char.isalpha() or char.isspace())
            if (len(text) - alpha) / len(text) > f.max_non_alpha_ratio:
                return "mostlySymbols"
        for pattern in self.patterns:
            if pattern.search(text):
                return "pattern"
        return None


class TextTokenizer:
    """A trained or loaded BPE tokenizer (HF ``tokenizers``), or raw UTF-8 bytes."""

    def __init__(self, backend=None):
        self.backend = backend

    @classmethod
    def build(cls, config: Tokenizer, texts: Iterable[str]) -> "TextTokenizer":
        if config.kind == "byte":
            return cls(None)
        from tokenizers import Tokenizer as HFTokenizer

        if config.path is not None:
            return cls(HFTokenizer.from_file(config.path))
        from tokenizers import decoders, models, pre_tokenizers, trainers

        backend = HFTokenizer(models.BPE(unk_token="[UNK]"))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=config.vocab_size, min_frequency=config.min_frequency, special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        )
        backend.train_from_iterator(texts, trainer=trainer)
        return cls(backend)

    @property
    def vocab_size(self) -> int:
        return 256 if self.backend is None else self.backend.get_vocab_size()

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self.backend is None:
            return [list(text.encode("utf-8")) for text in texts]
        return [encoding.ids for encoding in self.backend.encode_batch(texts, add_special_tokens=False)]

    def save(self, path: Path) -> None:
        if self.backend is not None:
            self.backend.save(str(path))


def record_rng(seed: int, key: bytes) -> random.Random:
    """A generator seeded by the augmentation seed and the record's content: independent of batching."""
    return random.Random(int.from_bytes(hashlib.blake2b(key + seed.to_bytes(8, "little"), digest_size=8).digest(), "little"))


def augment(text: str, augmentation: TextAugmentation, rng: random.Random) -> str:
    """One synthetic variant: synonym replacement, then masking, then random deletion, each a share of words."""
    words = text.split()
    if not words:
        return text
    if augmentation.synonym_replacement > 0:
        candidates = [i for i, word in enumerate(words) if word.lower().rstrip(".,;:!?") in SYNONYMS]
        for i in rng.sample(candidates, min(len(candidates), round(augmentation.synonym_replacement * len(words)))):
            word = words[i].rstrip(".,;:!?")
            replacement = rng.choice(SYNONYMS[word.lower()])
            if word[:1].isupper():
                replacement = replacement.capitalize()
            words[i] = replacement + words[i][len(word):]
    if augmentation.masking > 0:
        for i in rng.sample(range(len(words)), min(len(words), round(augmentation.masking * len(words)))):
            words[i] = MASK_TOKEN
    if augmentation.random_deletion > 0 and len(words) > 1:
        kept = [word for word in words if rng.random() >= augmentation.random_deletion]
        words = kept or [rng.choice(words)]
    return " ".join(words)


LENGTH_EDGES = [0, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
# Drift monitoring bins serving traffic alike (monitor/sketch.py), so the two are one list.
TOKEN_EDGES = list(sketch.LENGTH_EDGES)


class Histogram:
    """Fixed-edge histogram accumulated batch by batch."""

    def __init__(self, edges: list[int], counts: list[int] | None = None):
        self.edges = edges
        self.counts = np.zeros(len(edges), dtype=np.int64) if counts is None else np.asarray(counts, dtype=np.int64)

    def add(self, values: Iterator[int] | list[int]) -> None:
        array = np.asarray(list(values), dtype=np.int64)
        if array.size:
            self.counts += np.bincount(np.searchsorted(self.edges, array, side="right") - 1, minlength=len(self.edges))

    def to_dict(self) -> dict[str, int]:
        return {(f">={low}" if i == len(self.edges) - 1 else f"{low}-{self.edges[i + 1] - 1}"): int(count)
                for i, (low, count) in enumerate(zip(self.edges, self.counts))}

    def fractions(self) -> dict[str, float]:
        total = int(self.counts.sum())
        return {key: (count / total if total else 0.0) for key, count in self.to_dict().items()}
