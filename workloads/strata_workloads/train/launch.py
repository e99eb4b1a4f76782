"""torchrun, exiting with the trainer's own exit code: what a worker pod runs.

torchrun reports every worker failure, and its own stop by SIGTERM, as exit 1. The operator
needs the trainer's codes on the pod (the Job's podFailurePolicy and the attempt's story
read them): 2, invalid configuration; 143, stopped by SIGTERM after a checkpoint; others as
the first failed worker exited (a signal N as 128 + N, as shells report it).

    python -m strata_workloads.train.launch [torchrun arguments] -m strata_workloads.train ...
"""

from __future__ import annotations

import sys

EXIT_FAILED = 1


def exit_code(error: BaseException) -> int:
    """The pod's exit code for what ended torchrun."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    if isinstance(error, SignalException):
        # The launcher was stopped (SIGTERM from the kubelet); it passed the signal to the
        # workers, which checkpointed on their way out.
        return 128 + int(error.sigval)
    if isinstance(error, ChildFailedError):
        _rank, failure = error.get_first_failure()
        code = failure.exitcode
        return 128 - code if code < 0 else code or EXIT_FAILED
    return EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.run import main as torchrun

    try:
        torchrun(argv)
    except Exception as error:  # noqa: BLE001 - torchrun has already reported it on stderr
        return exit_code(error)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
