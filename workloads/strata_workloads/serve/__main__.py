"""``python -m strata_workloads.serve --config PATH`` (or ``$STRATA_SIDECAR_CONFIG``)."""

import sys

from strata_workloads.serve.cli import main

sys.exit(main())
