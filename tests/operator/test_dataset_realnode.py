"""Datasets on the dev cluster's real node: the pipeline runs as a pod in the locally built data
image, publishes a content-addressed version on the storage PVC and records it in status; a rerun
of the same input and spec finds the same version and writes nothing; a version that breaks a
quality gate is kept but the previous one stays current; a TrainingJob trains on the version.

A Dataset with parallelism 2 runs as an Indexed Job of two pods and publishes the version, byte
for byte, that one pod publishes. An image folder becomes an image version a VAE trains on, and
an audio folder a version of spectrograms.

The session's real-node cluster and operator (tests/operator/conftest.py) run it, with the locally
built data and trainer images.
"""

from __future__ import annotations

import json
import random

import pytest

from conftest import REAL_NODE_NAMESPACE_PREFIX
from realnode_support import apply, claim, volume_dir
from strata.devcluster import DevCluster
from tests_support import get_json, temporary_namespace, version_files, wait_for

pytestmark = [pytest.mark.realnode]

WORDS = ("orders arrive late when the courier misses the window so customers ask for refunds and support "
         "agents explain the policy about returns shipping tracking numbers and replacement parcels").split()


@pytest.fixture(scope="module")
def cluster(real_node_cluster: DevCluster) -> DevCluster:
    return real_node_cluster


@pytest.fixture(scope="module")
def namespace(cluster: DevCluster):
    yield from temporary_namespace(cluster, f"{REAL_NODE_NAMESPACE_PREFIX}ds")


@pytest.fixture(scope="module")
def operator(real_node_operator):
    return real_node_operator


def lines(count: int, seed: int) -> list[str]:
    generator = random.Random(seed)
    return [" ".join(generator.choice(WORDS) for _ in range(generator.randint(8, 24))) + f" #{seed}-{i}" for i in range(count)]


def dataset(max_duplicate_ratio: float) -> dict:
    return {"apiVersion": "strata.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": "tickets"},
            "spec": {"modality": "text", "schema": {"textField": "text"},
                     "sources": [{"pvc": {"claimName": "corpus", "path": "tickets"}, "format": "jsonl"}],
                     "cleaning": {"dedup": {"exact": True, "nearDuplicate": {"threshold": 0.9}}},
                     "preprocessing": {"text": {"tokenizer": {"kind": "bpe", "vocabSize": 512}}},
                     "storage": {"pvc": {"claimName": "datasets", "path": "tickets"}},
                     "qualityGates": {"maxDuplicateRatio": max_duplicate_ratio, "minRecords": 100}}}


def status(cluster: DevCluster, namespace: str, kind: str, name: str) -> dict:
    return (get_json(cluster, kind, "-n", namespace, name) or {}).get("status") or {}


def ended(cluster: DevCluster, namespace: str, job: str | None = None, timeout: float = 600) -> dict:
    """The Dataset's status once the run (its Job, or any new one) has ended and status reports it."""
    return wait_for(lambda: (s := status(cluster, namespace, "dataset", "tickets")).get("phase") in ("Succeeded", "Failed")
                    and (job is None or s.get("job") != job) and s, timeout=timeout, what="the pipeline run to end")


@pytest.fixture(scope="module")
def published(cluster: DevCluster, namespace: str, operator) -> dict:
    """The first version: 400 tickets and 40 exact duplicates (case and spacing changed)."""
    apply(cluster, namespace, claim("corpus"), claim("datasets"))
    tickets = volume_dir(cluster, namespace, "corpus") / "tickets"
    tickets.mkdir(parents=True)
    texts = lines(400, seed=1)
    records = [{"text": text} for text in texts] + [{"text": "  " + text.upper()} for text in texts[:40]]
    (tickets / "part0.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    apply(cluster, namespace, dataset(max_duplicate_ratio=0.2))
    return {"status": ended(cluster, namespace), "corpus": tickets, "storage": volume_dir(cluster, namespace, "datasets")}


def test_the_pipeline_pod_publishes_a_version_on_the_storage_pvc_and_status_names_it(cluster, namespace, published):
    done = published["status"]
    assert done["phase"] == "Succeeded", done
    version = done["version"]
    assert done["path"] == f"tickets/{version}"
    assert done["records"]["in"] == 440 and done["records"]["duplicates"] == 40 and done["records"]["out"] == 400
    manifest = json.loads((published["storage"] / "tickets" / version / "manifest.json").read_text())
    assert manifest["version"] == version
    assert sum(split["rows"] for split in manifest["splits"].values()) == 400
    assert [gate["name"] for gate in done["gates"]] == ["maxDuplicateRatio", "minRecords"]
    events = get_json(cluster, "events", "-n", namespace, "--field-selector", "involvedObject.name=tickets")["items"]
    assert any(event["reason"] == "Published" and version in event["message"] for event in events)
    columns = cluster.kubectl("get", "dataset", "tickets", "-n", namespace).stdout
    assert "Succeeded" in columns and version in columns and "400" in columns


def test_a_rerun_of_the_same_input_and_spec_finds_the_same_version_and_writes_nothing(cluster, namespace, published):
    before = published["status"]
    versions = sorted(path.name for path in (published["storage"] / "tickets").iterdir())
    # The run's Job is created once per run key: deleted, the same run is made again.
    cluster.kubectl("delete", "job", before["job"], "-n", namespace, "--wait=true")
    again = wait_for(lambda: (s := status(cluster, namespace, "dataset", "tickets")).get("phase") == "Succeeded"
                     and s.get("lastRefreshTime") != before["lastRefreshTime"] and s, timeout=600, what="the rerun to end")
    assert again["version"] == before["version"]
    assert [entry["version"] for entry in again["history"]] == [before["version"]]
    assert sorted(path.name for path in (published["storage"] / "tickets").iterdir()) == versions


def test_a_version_that_breaks_a_gate_is_kept_and_the_previous_stays_current(cluster, namespace, published):
    before = status(cluster, namespace, "dataset", "tickets")
    more = lines(100, seed=2)
    (published["corpus"] / "part1.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in more + more))
    apply(cluster, namespace, dataset(max_duplicate_ratio=0.05))
    after = ended(cluster, namespace, job=before["job"])
    assert after["phase"] == "Failed"
    conditions = {c["type"]: c for c in after["conditions"]}
    assert conditions["Degraded"]["reason"] == "QualityGateFailed" and "maxDuplicateRatio" in conditions["Degraded"]["message"]
    assert conditions["Ready"]["status"] == "True"  # the previous version still serves
    assert after["version"] == before["version"] and after["path"] == before["path"]
    rejected = after["history"][-1]
    assert rejected["version"] != before["version"] and rejected["promoted"] is False
    assert (published["storage"] / "tickets" / rejected["version"] / "manifest.json").is_file()


def test_two_pods_of_an_indexed_job_publish_the_version_one_pod_publishes(cluster, namespace, published):
    corpus = published["corpus"].parent / "shared"
    corpus.mkdir()
    texts = lines(300, seed=3)
    for part in range(4):  # duplicates across the files, so across the pods' shares
        own = texts[part * 75:(part + 1) * 75] + texts[((part + 1) % 4) * 75:][:10]
        (corpus / f"part{part}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in own))

    def shared(parallelism: int, storage: str) -> dict:
        manifest = dataset(max_duplicate_ratio=0.5)
        manifest["metadata"]["name"] = "shared"
        manifest["spec"]["sources"][0]["pvc"]["path"] = "shared"
        manifest["spec"]["storage"]["pvc"]["path"] = storage
        manifest["spec"]["parallelism"] = parallelism
        return manifest

    def published_version(storage: str) -> dict:
        return wait_for(lambda: (s := status(cluster, namespace, "dataset", "shared")).get("phase") == "Succeeded"
                        and s.get("path", "").startswith(storage) and s, timeout=600, what=f"a version in {storage}")

    apply(cluster, namespace, shared(1, "one"))
    one = published_version("one")
    cluster.kubectl("delete", "dataset", "shared", "-n", namespace, "--wait=true")
    apply(cluster, namespace, shared(2, "two"))
    two = published_version("two")

    job = get_json(cluster, "job", "-n", namespace, two["job"])
    assert (job["spec"]["completionMode"], job["spec"]["completions"]) == ("Indexed", 2)
    pods = get_json(cluster, "pods", "-n", namespace, "-l", f"batch.kubernetes.io/job-name={two['job']}")["items"]
    assert sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods) == ["0", "1"]
    assert two["version"] == one["version"] and two["records"] == one["records"]
    assert one["records"]["duplicates"] == 40
    storage = published["storage"]
    assert version_files(storage / "two" / two["version"]) == version_files(storage / "one" / one["version"])
    assert sorted(p.name for p in (storage / "two").iterdir()) == [two["version"]]  # the pods' shares are gone
    cluster.kubectl("delete", "dataset", "shared", "-n", namespace, "--wait=false")


def test_a_spec_the_pipeline_cannot_run_is_refused(cluster, namespace, operator):
    bad = dataset(0.5)
    bad["metadata"]["name"] = "on-s3"
    bad["spec"]["storage"] = {"s3": {"uri": "s3://versions/tickets"}}
    apply(cluster, namespace, bad)
    refused = wait_for(lambda: (s := status(cluster, namespace, "dataset", "on-s3")).get("phase") == "Invalid" and s,
                       what="the Dataset to be refused")
    assert next(c for c in refused["conditions"] if c["type"] == "Ready")["reason"] == "UnsupportedFeature"


def pictures(folder, classes: int, per_class: int) -> None:
    """PNG files in one directory per class: smooth random backgrounds, a class-coloured square."""
    import numpy as np
    from PIL import Image, ImageDraw

    generator = np.random.default_rng(5)
    for label in range(classes):
        (folder / f"class-{label}").mkdir(parents=True)
        for number in range(per_class):
            grid = generator.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
            image = Image.fromarray(grid).resize((40, 30), Image.Resampling.BICUBIC)
            x, y = (int(v) for v in generator.integers(0, 20, size=2))
            ImageDraw.Draw(image).rectangle((x, y, x + 12, y + 10), fill=(255 * (label == 0), 255 * (label == 1), 128))
            image.save(folder / f"class-{label}" / f"{number:03}.png")


@pytest.mark.deepspeed
def test_an_image_folder_becomes_a_version_a_vae_trains_on(cluster, namespace, published):
    """modality image: the pipeline pod decodes the PVC's image folder (classes from directories),
    drops a copy, brings the pictures to 16x16 grey, and a VAE TrainingJob trains on the version."""
    photos = published["corpus"].parent / "photos"
    pictures(photos, classes=2, per_class=40)
    (photos / "class-1" / "copy.png").write_bytes((photos / "class-0" / "000.png").read_bytes())
    (photos / "class-0" / "notes.txt").write_text("not a picture")
    apply(cluster, namespace, {
        "apiVersion": "strata.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": "photos"},
        "spec": {"modality": "image", "schema": {},
                 "sources": [{"pvc": {"claimName": "corpus", "path": "photos"}, "format": "imagefolder"}],
                 "cleaning": {"dedup": {"exact": True, "nearDuplicate": {"threshold": 0.9}}},
                 "preprocessing": {"image": {"width": 16, "height": 16, "colorSpace": "L"}},
                 "augmentation": {"image": {"horizontalFlip": True}, "maxSyntheticFraction": 0.2},
                 "storage": {"pvc": {"claimName": "datasets", "path": "photos"}}}})
    done = wait_for(lambda: (s := status(cluster, namespace, "dataset", "photos")).get("phase") in ("Succeeded", "Failed")
                    and s, timeout=600, what="the image pipeline run to end")
    assert done["phase"] == "Succeeded", done
    assert done["records"]["in"] == 82 and done["records"]["quarantined"] == 1 and done["records"]["duplicates"] == 1
    assert done["records"]["synthetic"] > 0
    manifest = json.loads((published["storage"] / "photos" / done["version"] / "manifest.json").read_text())
    assert (manifest["modality"], manifest["imageShape"], manifest["numClasses"]) == ("image", [1, 16, 16], 2)
    assert manifest["pipeline"]["statistics"]["classNames"] == ["class-0", "class-1"]

    apply(cluster, namespace, claim("vae-checkpoints"), {
        "apiVersion": "strata.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "photos-vae"},
        "spec": {"dataset": {"name": "photos"},
                 "model": {"family": "vae", "size": {"hidden": 32, "latentDim": 8}},
                 "deepspeed": {"zeroStage": 1, "precision": "fp32", "microBatchSize": 8},
                 "topology": {"nodes": 1, "gpusPerNode": 0}, "resources": {"cpu": "500m", "memory": "2Gi"},
                 "hyperparameters": {"maxSteps": 10, "learningRate": 1.0e-3},
                 "checkpoints": {"everySteps": 10, "storage": {"pvc": {"claimName": "vae-checkpoints", "path": "photos-vae"}}},
                 "validation": {"everySteps": 10}}})
    trained = wait_for(lambda: (s := status(cluster, namespace, "trainingjob", "photos-vae")).get("phase")
                       in ("Succeeded", "Failed") and s, timeout=900, what="the VAE TrainingJob to end")
    assert trained["phase"] == "Succeeded", trained
    assert trained["datasetVersion"] == done["version"]


def test_an_audio_folder_becomes_a_version_of_log_mel_spectrograms(cluster, namespace, published):
    """modality audio: the pipeline pod decodes the PVC's WAV files (classes from directories),
    resamples them and publishes spectrograms of the declared shape."""
    import io

    import numpy as np
    from scipy.io import wavfile

    words = published["corpus"].parent / "words"
    generator = np.random.default_rng(9)
    t = np.arange(22050) / 22050
    for label in range(2):
        (words / f"word-{label}").mkdir(parents=True)
        for number in range(6):
            tones = sum(np.sin(2 * np.pi * generator.uniform(150, 3000) * t) for _ in range(3))
            buffer = io.BytesIO()
            wavfile.write(buffer, 22050, (0.2 * tones * 32767).astype(np.int16))
            (words / f"word-{label}" / f"{number}.wav").write_bytes(buffer.getvalue())
    (words / "word-0" / "notes.txt").write_text("not a clip")
    apply(cluster, namespace, {
        "apiVersion": "strata.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": "words"},
        "spec": {"modality": "audio", "schema": {},
                 "sources": [{"pvc": {"claimName": "corpus", "path": "words"}, "format": "audiofolder"}],
                 "preprocessing": {"audio": {"sampleRate": 8000, "nMels": 32, "maxSeconds": 1}},
                 "storage": {"pvc": {"claimName": "datasets", "path": "words"}}}})
    done = wait_for(lambda: (s := status(cluster, namespace, "dataset", "words")).get("phase") in ("Succeeded", "Failed")
                    and s, timeout=600, what="the audio pipeline run to end")
    assert done["phase"] == "Succeeded", done
    assert done["records"]["in"] == 13 and done["records"]["quarantined"] == 1 and done["records"]["out"] == 12
    manifest = json.loads((published["storage"] / "words" / done["version"] / "manifest.json").read_text())
    assert (manifest["modality"], manifest["audioShape"], manifest["sampleRate"]) == ("audio", [32, 101], 8000)


@pytest.mark.deepspeed
def test_a_training_job_trains_on_the_current_version(cluster, namespace, published):
    current = status(cluster, namespace, "dataset", "tickets")["version"]
    apply(cluster, namespace, claim("checkpoints"), {
        "apiVersion": "strata.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "tickets-lm"},
        "spec": {"dataset": {"name": "tickets"},
                 "model": {"family": "transformer", "size": {"layers": 1, "hidden": 32, "heads": 2, "contextLength": 32}},
                 "deepspeed": {"zeroStage": 1, "precision": "fp32", "microBatchSize": 4},
                 "topology": {"nodes": 1, "gpusPerNode": 0}, "resources": {"cpu": "500m", "memory": "2Gi"},
                 "hyperparameters": {"maxSteps": 20, "learningRate": 1.0e-3},
                 "checkpoints": {"everySteps": 10, "storage": {"pvc": {"claimName": "checkpoints", "path": "tickets-lm"}}},
                 "validation": {"everySteps": 20}}})
    done = wait_for(lambda: (s := status(cluster, namespace, "trainingjob", "tickets-lm")).get("phase") in ("Succeeded", "Failed")
                    and s, timeout=900, what="the TrainingJob to end")
    assert done["phase"] == "Succeeded", done
    assert done["datasetVersion"] == current
