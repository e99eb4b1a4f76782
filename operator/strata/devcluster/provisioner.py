"""A local-path volume provisioner for the dev cluster's real node.

Binds each PersistentVolumeClaim of the `standard` StorageClass to a new directory under
`<state>/volumes` (a hostPath PersistentVolume pinned to the real node), and deletes the
directory with the volume when its claim is gone, as rancher's local-path-provisioner does.
Directories are world-writable so that non-root pods can use them: hostPath volumes
ignore `fsGroup`.

Run by the dev cluster as a host process:
`python -m strata.devcluster.provisioner --kubeconfig K --root DIR --node NAME`.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import threading
from pathlib import Path

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from .node import DEFAULT_STORAGE_CLASS, PROVISIONER_NAME

log = logging.getLogger("strata.devcluster.provisioner")
POLL_SECONDS = 1.0
_PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"


def volume_name(claim: client.V1PersistentVolumeClaim) -> str:
    return f"pvc-{claim.metadata.uid}"


def volume_for(claim: client.V1PersistentVolumeClaim, root: Path, node: str) -> dict:
    """The PersistentVolume that satisfies `claim` (pure)."""
    spec = claim.spec
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": volume_name(claim),
            "annotations": {_PROVISIONED_BY: PROVISIONER_NAME},
        },
        "spec": {
            "capacity": {"storage": spec.resources.requests["storage"]},
            "accessModes": spec.access_modes,
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": spec.storage_class_name,
            "volumeMode": spec.volume_mode or "Filesystem",
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": claim.metadata.namespace,
                "name": claim.metadata.name,
                "uid": claim.metadata.uid,
            },
            "hostPath": {"path": str(root / volume_name(claim)), "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
        },
    }


class Provisioner:
    def __init__(self, api: client.CoreV1Api, root: Path, node: str):
        self.api = api
        self.root = root
        self.node = node

    def pass_once(self) -> None:
        volumes = {pv.metadata.name: pv for pv in self.api.list_persistent_volume().items}
        for claim in self.api.list_persistent_volume_claim_for_all_namespaces().items:
            if (claim.spec.storage_class_name == DEFAULT_STORAGE_CLASS
                    and claim.status.phase == "Pending" and not claim.spec.volume_name
                    and claim.metadata.deletion_timestamp is None
                    and volume_name(claim) not in volumes):
                self.provision(claim)
        for volume in volumes.values():
            annotations = volume.metadata.annotations or {}
            if (annotations.get(_PROVISIONED_BY) == PROVISIONER_NAME
                    and volume.status.phase == "Released"):
                self.delete(volume)

    def provision(self, claim: client.V1PersistentVolumeClaim) -> None:
        directory = self.root / volume_name(claim)
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o777)
        try:
            self.api.create_persistent_volume(volume_for(claim, self.root, self.node))
        except ApiException as error:
            if error.status != 409:
                raise
        log.info("Provisioned %s for %s/%s", directory, claim.metadata.namespace,
                 claim.metadata.name)

    def delete(self, volume: client.V1PersistentVolume) -> None:
        path = Path(volume.spec.host_path.path)
        if path.parent == self.root:  # never outside our root, whatever the object says
            shutil.rmtree(path, ignore_errors=True)
        try:
            self.api.delete_persistent_volume(volume.metadata.name)
        except ApiException as error:
            if error.status != 404:
                raise
        log.info("Deleted %s and %s", volume.metadata.name, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m strata.devcluster.provisioner")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--node", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config.load_kube_config(args.kubeconfig)
    provisioner = Provisioner(client.CoreV1Api(), args.root, args.node)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.is_set():
        try:
            provisioner.pass_once()
        except Exception:  # the API server restarting must not end the provisioner
            log.exception("provisioning pass failed; retrying")
        stop.wait(POLL_SECONDS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
