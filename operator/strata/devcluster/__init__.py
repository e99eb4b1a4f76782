"""Strata's local development control plane: real etcd/kube-apiserver/controller-manager/
scheduler processes plus kwok-simulated CPU and GPU nodes. See `cluster` for the layout."""

from .binaries import BuildError, ensure_binaries
from .cluster import (
    DEFAULT_STATE_DIR,
    DevCluster,
    DevClusterError,
    FakeNode,
    KubectlError,
    default_nodes,
    down,
    free_port,
    reset,
    running_components,
    status,
    up,
)
from .kubectl import kubectl_path
from .processes import processes_using

__all__ = [
    "DEFAULT_STATE_DIR",
    "BuildError",
    "DevCluster",
    "DevClusterError",
    "FakeNode",
    "KubectlError",
    "default_nodes",
    "down",
    "ensure_binaries",
    "free_port",
    "kubectl_path",
    "processes_using",
    "reset",
    "running_components",
    "status",
    "up",
]
