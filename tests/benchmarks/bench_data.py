"""Benchmark: exact + near-duplicate removal + tokenizing, the pipeline vs a straightforward pandas version.

    python tests/benchmarks/bench_data.py [--records 1000000] [--near-perm 128]

Generates N JSONL records (10% exact duplicates differing in case/spacing, 5% near duplicates),
and the same records doubled, trains one BPE tokenizer on a sample that both sides load, then runs
each implementation in its own process (peak RSS from getrusage) on N and 2N records and prints a
table with ratios. The pandas version loads the file whole, drop_duplicates on a normalized key,
tokenizes with encode_batch, and builds one datasketch MinHash per row (update_batch on the
token-shingle bytes) into the same MinHashLSH.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_WORDS = [f"w{i}" for i in range(5000)]


def generate(path: Path, records: int, seed: int) -> None:
    rng = random.Random(seed)
    recent: list[str] = []
    with path.open("w") as handle:
        for _ in range(records):
            roll = rng.random()
            if roll < 0.10 and recent:
                text = "  " + rng.choice(recent).upper()
            elif roll < 0.15 and recent:
                words = rng.choice(recent).split()
                words[rng.randrange(len(words))] = "changed"
                text = " ".join(words)
            else:
                text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(20, 40)))
                recent = (recent + [text])[-1000:]
            handle.write(json.dumps({"text": text}) + "\n")


def worker_pipeline(input_path: str, tokenizer: str, num_perm: int, out: str) -> dict:
    from strata_workloads.data.config import PipelineConfig
    from strata_workloads.data.pipeline import run_pipeline

    config = PipelineConfig.model_validate({
        "sources": [{"path": input_path, "format": "jsonl"}],
        "cleaning": {"dedup": {"exact": True, "nearDuplicate": {"threshold": 0.8, "numPerm": num_perm}}},
        "preprocessing": {"text": {"tokenizer": {"path": tokenizer}}},
        "validationFraction": 0.0,
    })
    result = run_pipeline(config, out)
    stats = result.manifest.pipeline.statistics
    return {"out": stats["recordsOut"], "duplicates": stats["duplicates"], "near": stats["nearDuplicates"]}


def worker_pandas(input_path: str, tokenizer_path: str, num_perm: int, out: str) -> dict:
    import re
    import unicodedata

    import pandas as pd
    from datasketch import MinHash, MinHashLSH
    from tokenizers import Tokenizer

    frame = pd.read_json(input_path, lines=True)
    frame["text"] = frame["text"].map(lambda t: unicodedata.normalize("NFKC", t).strip())
    frame["key"] = frame["text"].map(lambda t: re.sub(r"\s+", " ", t.casefold()).strip())
    before = len(frame)
    frame = frame.drop_duplicates("key").reset_index(drop=True)
    duplicates = before - len(frame)
    tokenizer = Tokenizer.from_file(tokenizer_path)
    frame["tokens"] = [e.ids for e in tokenizer.encode_batch(frame["text"].tolist(), add_special_tokens=False)]
    lsh = MinHashLSH(threshold=0.8, num_perm=num_perm)

    def is_near_duplicate(row) -> bool:
        ids = row.tokens
        shingles = [" ".join(map(str, ids[i:i + 3])).encode() for i in range(max(1, len(ids) - 2))]
        minhash = MinHash(num_perm=num_perm)
        minhash.update_batch(shingles)
        if lsh.query(minhash):
            return True
        lsh.insert(row.Index, minhash)
        return False

    near = [is_near_duplicate(row) for row in frame.itertuples()]
    frame = frame[[not n for n in near]]
    frame[["text", "tokens"]].to_parquet(Path(out) / "out.parquet")
    return {"out": len(frame), "duplicates": duplicates, "near": sum(near)}


def run_worker(kind: str, input_path: Path, tokenizer: Path, num_perm: int, records: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, __file__, "--worker", kind, "--input", str(input_path), "--tokenizer", str(tokenizer),
                   "--near-perm", str(num_perm), "--out", out]
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT / 'workloads'}"}
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
    result["records_per_s"] = records / result["seconds"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--near-perm", type=int, default=128)
    parser.add_argument("--worker")
    parser.add_argument("--input")
    parser.add_argument("--tokenizer")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker:
        started = time.perf_counter()
        work = worker_pipeline if args.worker == "pipeline" else worker_pandas
        result = work(args.input, args.tokenizer, args.near_perm, args.out)
        result["seconds"] = time.perf_counter() - started
        result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    sys.path[:0] = [str(ROOT / "operator"), str(ROOT / "workloads")]
    from strata_workloads.data.config import Tokenizer as TokenizerConfig
    from strata_workloads.data.text import TextTokenizer

    with tempfile.TemporaryDirectory() as scratch:
        scratch_path = Path(scratch)
        inputs = {}
        for size in (args.records, 2 * args.records):
            inputs[size] = scratch_path / f"records-{size}.jsonl"
            generate(inputs[size], size, seed=1)
        sample = [json.loads(line)["text"] for _, line in zip(range(20_000), inputs[args.records].open())]
        tokenizer_path = scratch_path / "tokenizer.json"
        TextTokenizer.build(TokenizerConfig(vocabSize=8000), sample).save(tokenizer_path)

        rows = []
        for size, path in inputs.items():
            pipeline = run_worker("pipeline", path, tokenizer_path, args.near_perm, size)
            pandas = run_worker("pandas", path, tokenizer_path, args.near_perm, size)
            rows.append((size, pipeline, pandas))

    print(f"exact + near dedup (MinHash-LSH, {args.near_perm} perms, threshold 0.8) + BPE tokenizing")
    header = f"{'records':>10} {'impl':>9} {'rec/s':>10} {'peak MiB':>9} {'kept':>9} {'dups':>8} {'near':>8}"
    print(header)
    print("-" * len(header))
    for size, pipeline, pandas in rows:
        for name, result in (("pipeline", pipeline), ("pandas", pandas)):
            print(f"{size:>10} {name:>9} {result['records_per_s']:>10.0f} {result['peak_mib']:>9.0f} "
                  f"{result['out']:>9} {result['duplicates']:>8} {result['near']:>8}")
        print(f"{size:>10} {'ratio':>9} {pipeline['records_per_s'] / pandas['records_per_s']:>9.2f}x "
              f"{pipeline['peak_mib'] / pandas['peak_mib']:>8.2f}x  (pipeline / pandas)")
    (small, p1, d1), (_, p2, d2) = rows
    print(f"peak memory when the input doubles: pipeline x{p2['peak_mib'] / p1['peak_mib']:.2f}, "
          f"pandas x{d2['peak_mib'] / d1['peak_mib']:.2f}")


if __name__ == "__main__":
    main()
