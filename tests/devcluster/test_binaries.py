"""Which control-plane binaries are used: installed ones of the pinned version, else the cache."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from strata.devcluster import binaries


def _fake_binary(directory: Path, name: str, version_output: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\necho '{version_output}'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STRATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # nothing control-plane-ish on it
    return tmp_path / "cache"


def test_cache_dirs_follow_strata_cache(empty_cache):
    assert binaries.KUBERNETES.cache_dir() == empty_cache / "bin" / "kubernetes-v1.36.3"
    assert binaries.ETCD.cache_dir() == empty_cache / "bin" / "etcd-v3.6.8"
    assert binaries.KWOK.cache_dir() == empty_cache / "bin" / "kwok-v0.8.0"
    assert binaries.HELM.cache_dir() == empty_cache / "bin" / "helm-v3.22.0"


def test_helm_on_path_is_recognised_by_its_version_subcommand(empty_cache, tmp_path, monkeypatch):
    on_path = tmp_path / "path"
    helm = _fake_binary(on_path, "helm", "v3.22.0+g1234567")
    monkeypatch.setenv("PATH", f"{on_path}:/usr/bin:/bin")
    assert binaries.find_binaries()["helm"] == helm


def test_nothing_installed_or_cached_means_everything_must_be_built(empty_cache):
    assert set(binaries.find_binaries().values()) == {None}


def test_kubebuilder_assets_of_the_pinned_version_are_preferred(empty_cache, tmp_path, monkeypatch):
    assets = tmp_path / "assets"
    apiserver = _fake_binary(assets, "kube-apiserver", "Kubernetes v1.36.3")
    etcd = _fake_binary(assets, "etcd", "etcd Version: 3.6.8")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(assets))
    found = binaries.find_binaries()
    assert found["kube-apiserver"] == apiserver
    assert found["etcd"] == etcd
    assert found["kwok"] is None


def test_installed_binaries_of_another_version_are_ignored(empty_cache, tmp_path, monkeypatch):
    on_path = tmp_path / "path"
    _fake_binary(on_path, "kube-apiserver", "Kubernetes v1.30.0")
    monkeypatch.setenv("PATH", f"{on_path}:/usr/bin:/bin")
    cached = _fake_binary(binaries.KUBERNETES.cache_dir(), "kube-apiserver", "irrelevant")
    assert binaries.find_binaries()["kube-apiserver"] == cached


def test_gomod_dirs_pin_each_component():
    for component in binaries.COMPONENTS:
        go_mod = (component.module_dir / "go.mod").read_text()
        assert (component.module_dir / "go.sum").is_file()
        module = {"kubernetes": "k8s.io/kubernetes", "etcd": "go.etcd.io/etcd/server/v3",
                  "kwok": "sigs.k8s.io/kwok", "helm": "helm.sh/helm/v3",
                  "prometheus": "github.com/prometheus/prometheus",
                  "coredns": "github.com/coredns/coredns",
                  "metrics-server": "sigs.k8s.io/metrics-server"}[component.name]
        assert f"{module} {component.version}" in go_mod
