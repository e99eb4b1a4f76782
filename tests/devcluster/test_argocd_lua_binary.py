"""argocd-lua, Argo CD's Lua runtime for the Argo CD tests: built on demand, never by the cluster."""

from __future__ import annotations

import shutil

import pytest

from strata.devcluster import binaries
from strata.devcluster.binaries import ARGOCD_LUA, ARGOCD_VERSION, COMPONENTS, build_component


def test_the_cluster_never_waits_for_it():
    assert ARGOCD_LUA not in COMPONENTS
    assert "argocd-lua" not in binaries.BINARY_NAMES


def test_its_module_pins_argo_cd_and_the_go_toolchain_argo_cd_needs():
    go_mod = (ARGOCD_LUA.module_dir / "go.mod").read_text()
    assert f"github.com/argoproj/argo-cd/v3 {ARGOCD_VERSION}" in go_mod
    assert f"toolchain {ARGOCD_LUA.toolchain}" in go_mod
    assert (ARGOCD_LUA.module_dir / "go.sum").is_file()


def test_editing_the_runner_changes_its_cache_key(tmp_path, monkeypatch):
    assert ARGOCD_LUA.version == f"{ARGOCD_VERSION}-{binaries._source_version('argocd-lua')}"
    shutil.copytree(ARGOCD_LUA.module_dir, tmp_path / "argocd-lua")
    monkeypatch.setattr(binaries, "GOMOD_DIR", tmp_path)
    before = binaries._source_version("argocd-lua")
    with open(tmp_path / "argocd-lua" / "main.go", "a") as main:
        main.write("\n// edited\n")
    assert binaries._source_version("argocd-lua") != before


def test_a_cached_runner_is_used_without_building(tmp_path, monkeypatch):
    monkeypatch.setenv("STRATA_CACHE", str(tmp_path))
    cached = ARGOCD_LUA.cache_dir() / "argocd-lua"
    cached.parent.mkdir(parents=True)
    cached.write_text("#!/bin/sh\n")
    monkeypatch.setattr(binaries, "_go_build", lambda *args: pytest.fail("must not build"))
    build_component(ARGOCD_LUA, ["argocd-lua"])
    assert cached.read_text() == "#!/bin/sh\n"
