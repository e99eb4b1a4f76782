"""`strata run` loads only what the operator needs: not the dev cluster, not cryptography."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Everything up to kopf.run happens for real; only the blocking run is replaced, by a dump of
# the modules loaded by then (the handlers are registered, so every controller is imported).
PROBE = """
import json, sys
from strata import cli
def dump_modules(kopf, args):
    print(json.dumps(sorted(name for name, module in sys.modules.items() if module is not None)))
cli._start_operator = dump_modules
cli.main(["run", "--metrics-port", "0"])
"""


def test_strata_run_imports_neither_the_dev_cluster_nor_cryptography():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), str(REPO / "workloads")])}
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    modules = json.loads(result.stdout.splitlines()[-1])
    assert "strata.controllers.reconcile" in modules and "kopf" in modules  # the probe saw a real run path
    assert [m for m in modules if m.startswith("strata.devcluster")] == []
    assert [m for m in modules if m.split(".")[0] == "cryptography"] == []
    # The workloads' heavy dependencies stay in their images (the embedding test's among them).
    heavy = {"torch", "sentence_transformers", "transformers", "sklearn", "deepspeed"}
    assert [m for m in modules if m.split(".")[0] in heavy] == []
