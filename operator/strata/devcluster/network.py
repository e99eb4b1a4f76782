"""Addresses of the real node's network, shared by the PKI, the control plane and the node.

The real node's pods live on one Linux bridge. Its gateway address is also the node's IP:
the kubelet, CoreDNS and the apiserver listen there, so pods reach them from their own
network namespaces, while nothing listens on the host's external interfaces.
"""

from __future__ import annotations

REAL_NODE_NAME = "strata-node"
NODE_BRIDGE = "strata0"
# kwok's fake pods take 10.244.0.0/16; the real node's pods get a range of their own.
NODE_POD_CIDR = "10.245.0.0/24"
NODE_IP = "10.245.0.1"
# Both pod ranges: kube-proxy treats traffic from them as cluster traffic.
CLUSTER_CIDR = "10.244.0.0/15"
CLUSTER_DOMAIN = "cluster.local"
