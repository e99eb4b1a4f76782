"""Objects the API must refuse, each with the fragments its error message must contain.

Shared by the API-server test (tests/operator/test_crds_on_cluster.py) and the client-side
parity test (tests/unit/test_api_parity.py): the first fragment is always the field path.
"""

from __future__ import annotations

import pytest


def _drop(*path):
    def mutate(obj):
        target = obj
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return mutate


def _set(value, *path):
    def mutate(obj):
        target = obj
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def _both(first, second):
    def mutate(obj):
        first(obj)
        second(obj)
    return mutate


INVALID = [
    pytest.param("TrainingJob", _drop("spec", "dataset"), ["spec.dataset", "Required value"],
                 id="a training job without a dataset is rejected"),
    pytest.param("TrainingJob", _set("rnn", "spec", "model", "family"), ["spec.model.family", 'Unsupported value: "rnn"'],
                 id="an unknown model family is rejected"),
    pytest.param("TrainingJob", _set(4, "spec", "deepspeed", "zeroStage"), ["spec.deepspeed.zeroStage", "less than or equal to 3"],
                 id="zero stage 4 is rejected"),
    pytest.param("TrainingJob", _set(0, "spec", "deepspeed", "microBatchSize"), ["spec.deepspeed.microBatchSize", "greater than or equal to 1"],
                 id="a zero micro batch size is rejected"),
    pytest.param("TrainingJob", _set(-1e-4, "spec", "hyperparameters", "learningRate"), ["spec.hyperparameters.learningRate"],
                 id="a negative learning rate is rejected"),
    pytest.param("TrainingJob", _set({"zeroStage": 0, "offload": "cpu"}, "spec", "deepspeed"), ["spec.deepspeed.offload", "offload needs zeroStage"],
                 id="cpu offload without zero is rejected by a CEL rule"),
    pytest.param("TrainingJob", _set({"hidden": 100, "heads": 12}, "spec", "model", "size"), ["spec.model.size.heads", "multiple of heads"],
                 id="hidden not divisible by heads is rejected by a CEL rule"),
    pytest.param("TrainingJob", _set("prompt", "spec", "model", "conditioning"), ["spec.model.conditioning", 'Unsupported value: "prompt"'],
                 id="prompt conditioning is refused: it would train exactly as none does"),
    pytest.param("TrainingJob", _both(_set({"family": "gan"}, "spec", "model"), _set("fp16", "spec", "deepspeed", "precision")),
                 ["spec.deepspeed.precision", "fp16 is not supported for the gan family", "use bf16 or fp32"],
                 id="an fp16 gan, which the trainer refuses, is rejected by a CEL rule"),
    pytest.param("TrainingJob", _both(_set(0, "spec", "topology", "gpusPerNode"), _set("fp16", "spec", "deepspeed", "precision")),
                 ["spec.deepspeed.precision", "fp16 needs GPUs", "set topology.gpusPerNode"],
                 id="fp16 training on CPU workers, which the trainer refuses, is rejected by a CEL rule"),
    pytest.param("TrainingJob", _set("support.lm", "metadata", "name"), ["metadata.name must not contain '.'", "use '-' instead"],
                 id="a training job name with a dot, which its Triton model cannot have, is rejected by a CEL rule"),
    pytest.param("TrainingJob", _set(2**32, "spec", "hyperparameters", "seed"), ["spec.hyperparameters.seed", "less than or equal to 4294967295"],
                 id="a seed above 32 bits, which would overflow the trainer's derived seeds, is rejected"),
    pytest.param("TrainingJob", _both(_set({"family": "vae"}, "spec", "model"),
                                      _set({"earlyStopping": {"metric": "perplexity"}}, "spec", "validation")),
                 ["spec.validation.earlyStopping.metric", "perplexity is only for the transformer"],
                 id="early stopping a vae on perplexity is rejected by a CEL rule"),
    pytest.param("TrainingJob", _set({"learningRate": 0.1, "warmupSteps": 10, "maxSteps": 10}, "spec", "hyperparameters"),
                 ["spec.hyperparameters.warmupSteps", "below maxSteps"], id="warmup as long as training is rejected by a CEL rule"),
    pytest.param("TrainingJob", _set("lots", "spec", "resources", "memory"), ["spec.resources.memory", "must be a Kubernetes quantity"],
                 id="a malformed memory quantity is rejected"),
    pytest.param("TrainingJob", _set("1.2.3", "spec", "resources", "cpu"), ["spec.resources.cpu", "must be a Kubernetes quantity"],
                 id="a cpu quantity with two points is rejected"),
    pytest.param("TrainingJob", _set("4eeee", "spec", "resources", "memory"), ["spec.resources.memory", "must be a Kubernetes quantity"],
                 id="a memory quantity with an unknown suffix is rejected"),
    pytest.param("ModelDeployment", _set("-4Gi", "spec", "resources", "memory"), ["spec.resources.memory", "must not be negative"],
                 id="a negative memory quantity is rejected by the CEL quantity library"),
    pytest.param("ModelDeployment", _set(-1, "spec", "resources", "cpu"), ["spec.resources.cpu", "must not be negative"],
                 id="a negative integer cpu is rejected"),
    pytest.param("ModelDeployment", _set("-1", "spec", "resources", "cpu"), ["spec.resources.cpu", "must not be negative"],
                 id="a negative cpu string is rejected"),
    pytest.param("TrainingJob", _set(64, "spec", "model", "size", "imageSize"), ['unknown field "spec.model.size.imageSize"'],
                 id="image size is refused: the image shape comes from the dataset"),
    pytest.param("TrainingJob", _set(32, "spec", "model", "size", "latentDim"),
                 ["spec.model.size.latentDim", "applies only to the vae and gan families"],
                 id="a transformer with a latent size is rejected by a CEL rule"),
    pytest.param("TrainingJob", _set({"family": "diffusion", "size": {"layers": 4, "diffusionSteps": 50}}, "spec", "model"),
                 ["spec.model.size.layers", "applies only to the transformer family"],
                 id="a diffusion model with transformer layers is rejected by a CEL rule"),
    pytest.param("TrainingJob", _set(1, "spec", "deepspeed", "zeroStag"), ['unknown field "spec.deepspeed.zeroStag"'],
                 id="a misspelt field is rejected, not silently dropped"),
    pytest.param("Dataset", _set([{"format": "jsonl", "pvc": {"claimName": "a"}, "s3": {"uri": "s3://b/"}}], "spec", "sources"),
                 ["spec.sources[0]", "exactly one of s3, pvc or http"], id="a source with two locations is rejected by a CEL rule"),
    pytest.param("Dataset", _set([], "spec", "sources"), ["spec.sources", "at least 1"],
                 id="a dataset without sources is rejected"),
    pytest.param("Dataset", _set("every night", "spec", "refresh", "schedule"), ["spec.refresh.schedule"],
                 id="a malformed cron schedule is rejected"),
    pytest.param("Dataset", _set([{"field": "intent", "action": "impute"}], "spec", "cleaning", "missingValues"),
                 ["spec.cleaning.missingValues[0].value", "impute needs a value"], id="impute without a value is rejected by a CEL rule"),
    pytest.param("Dataset", _set({"minLength": 100, "maxLength": 10}, "spec", "cleaning", "filters"),
                 ["spec.cleaning.filters.minLength", "must not exceed maxLength"], id="min length above max length is rejected by a CEL rule"),
    pytest.param("ModelDeployment", _set({"minReplicas": 5, "maxReplicas": 2}, "spec", "autoscaling"),
                 ["spec.autoscaling.minReplicas", "must not exceed maxReplicas"], id="min replicas above max replicas is rejected by a CEL rule"),
    pytest.param("ModelDeployment",
                 _set({"repository": {"location": {"s3": {"uri": "s3://models/lm", "endpoint": "seaweedfs:8333"}},
                                      "name": "lm"}}, "spec", "model"),
                 ["spec.model.repository.location.s3.endpoint", "should match"],
                 id="an S3 endpoint without its scheme is rejected"),
    pytest.param("ModelDeployment", _set(1.5, "spec", "monitoring", "auditSampleRate"), ["spec.monitoring.auditSampleRate", "less than or equal to 1"],
                 id="an audit sample rate above one is rejected"),
    pytest.param("ModelDeployment", _set({}, "spec", "model"), ["spec.model", "exactly one of trainingJob or repository"],
                 id="a deployment with no model source is rejected by a CEL rule"),
    pytest.param("ModelDeployment", _set({"requestsPerSecond": 50, "burst": 10}, "spec", "access", "rateLimit"),
                 ["spec.access.rateLimit.burst", "at least requestsPerSecond"], id="a burst below the rate is rejected by a CEL rule"),
    pytest.param("FeedbackPolicy", _set({}, "spec", "monitors"), ["spec.monitors", "enable at least one monitor"],
                 id="a policy with no monitors is rejected by a CEL rule"),
    pytest.param("FeedbackPolicy", _set("soon", "spec", "retrain", "cooldown"), ["spec.retrain.cooldown"],
                 id="a malformed cooldown duration is rejected"),
]
