"""``python -m strata_workloads.train``: see the package docstring for the contract."""

import logging
import os
import sys

from strata_workloads.train.cli import main

code = main()
# Leave without finalizing the interpreter. destroy_process_group() does not stop the gloo
# threads (two per process group, plus a socket loop): DeepSpeed keeps references to the
# groups (ZeRO-3 parameters, its optimizer, deepspeed.utils.groups), so they run on while
# CPython tears itself down, and a native thread that touches Python state then is stopped
# mid-C++ ("terminate called without an active exception", SIGABRT), more often the more the
# machine is loaded. By now every result is written: events were flushed line by line, the
# termination message and checkpoints are closed files.
logging.shutdown()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
