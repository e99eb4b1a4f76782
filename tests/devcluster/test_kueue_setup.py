"""Kueue's add-on without a cluster: how it is built, what it registers, and how the host
path Kueue insists on is claimed and given back (on a scratch directory standing in for it)."""

from __future__ import annotations

import base64

import pytest

from strata.devcluster import kueue
from strata.devcluster.binaries import COMPONENTS, KUEUE, KUEUE_VERSION


def test_kueue_is_built_on_demand_from_its_own_pinned_module():
    assert KUEUE not in COMPONENTS  # `strata dev build` (CI's install step) does not build it
    go_mod = (KUEUE.module_dir / "go.mod").read_text()
    assert f"sigs.k8s.io/kueue {KUEUE_VERSION}" in go_mod
    assert (KUEUE.module_dir / "go.sum").is_file()
    assert KUEUE.packages == {"kueue": "sigs.k8s.io/kueue/cmd/kueue"}


@pytest.fixture(scope="module")
def source():
    return kueue.module_source()


def test_only_the_batch_job_and_kueues_own_webhooks_are_registered_by_url(source):
    configurations = kueue.webhook_configurations(kueue.webhook_manifests(source), 9443, b"CA PEM")
    assert {c["metadata"]["name"] for c in configurations} == {
        kueue.MUTATING_WEBHOOKS, kueue.VALIDATING_WEBHOOKS}
    paths = set()
    for configuration in configurations:
        for webhook in configuration["webhooks"]:
            url = webhook["clientConfig"]["url"]
            assert url.startswith("https://127.0.0.1:9443/")
            assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == b"CA PEM"
            assert "service" not in webhook["clientConfig"]
            paths.add(url.removeprefix("https://127.0.0.1:9443"))
    assert {"/mutate-batch-v1-job", "/validate-batch-v1-job",
            "/validate-kueue-x-k8s-io-v1beta2-clusterqueue"} <= paths
    # The pod and deployment webhooks (failurePolicy: Fail) would block unrelated kinds.
    assert not any("pod" in path.split("-")[-1] or "deployment" in path for path in paths)


def test_the_crds_come_from_the_module_and_include_the_queue_kinds(source):
    names = kueue.crd_names(kueue.crd_files(source))
    assert {"clusterqueues.kueue.x-k8s.io", "localqueues.kueue.x-k8s.io",
            "resourceflavors.kueue.x-k8s.io", "workloads.kueue.x-k8s.io"} <= set(names)


def test_the_configuration_keeps_everything_on_loopback_with_certs_from_the_state_dir(tmp_path):
    layout = kueue.KueueLayout(tmp_path)
    config = kueue.configuration(layout, kueue.KueuePorts(1, 2, 3, 4))
    assert config["internalCertManagement"] == {"enable": False}
    assert config["webhook"] == {"host": "127.0.0.1", "port": 1, "certDir": str(layout.webhook_cert_dir)}
    assert config["health"]["healthProbeBindAddress"] == "127.0.0.1:2"
    assert config["metrics"]["bindAddress"] == "127.0.0.1:3"
    assert config["integrations"] == {"frameworks": ["batch/job"]}
    assert config["leaderElection"] == {"leaderElect": False}
    assert "--feature-gates=VisibilityOnDemand=false" in kueue.arguments(
        layout, kueue.KueuePorts(1, 2, 3, 4), tmp_path / "kubeconfig")


def _cert_pair(tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("ours crt")
    key.write_text("ours key")
    return cert, key


@pytest.mark.parametrize("before", ["absent", "existing files"])
def test_the_metrics_cert_path_is_claimed_and_given_back_as_it_was(tmp_path, before):
    target = tmp_path / "etc" / "kueue" / "metrics" / "certs"
    (tmp_path / "etc").mkdir()
    if before == "existing files":
        target.mkdir(parents=True)
        (target / "tls.crt").write_text("theirs crt")
        (target / "tls.key").write_text("theirs key")
    snapshot = kueue.host_snapshot(target)
    layout = kueue.KueueLayout(tmp_path / "state")
    cert, key = _cert_pair(tmp_path)

    kueue.claim_metrics_cert_dir(layout, cert, key, target)
    kueue.claim_metrics_cert_dir(layout, cert, key, target)  # a retried start keeps the first record
    assert (target / "tls.crt").read_text() == "ours crt"
    assert kueue.host_snapshot(target) != snapshot

    kueue.release_metrics_cert_dir(layout.state_dir)
    assert kueue.host_snapshot(target) == snapshot
    assert (tmp_path / "etc").is_dir()  # only what was created is removed
    assert not layout.host_record.exists()
    kueue.release_metrics_cert_dir(layout.state_dir)  # safe to repeat
    assert kueue.host_snapshot(target) == snapshot


def test_queue_objects_give_the_cluster_queue_quota_for_cpu_memory_and_gpus():
    flavor, cluster_queue, local_queue = kueue.queue_objects(
        cluster_queue="cq", local_queue="lq", namespace="team", gpus=8, cpu="16", memory="64Gi")
    assert flavor["kind"] == "ResourceFlavor"
    quota = {r["name"]: r["nominalQuota"]
             for r in cluster_queue["spec"]["resourceGroups"][0]["flavors"][0]["resources"]}
    assert quota == {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "8"}
    assert local_queue["metadata"] == {"name": "lq", "namespace": "team"}
    assert local_queue["spec"] == {"clusterQueue": "cq"}
