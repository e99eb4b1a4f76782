"""``python -m strata_workloads.train``: see the package docstring for the contract."""

import sys

from strata_workloads.train.cli import main

sys.exit(main())
