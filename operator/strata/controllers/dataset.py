"""Dataset controller.

This version validates the resource, publishes its resolved configuration as a ConfigMap the
workload pods will mount, and reports Ready=False/NotImplemented: ingesting and versioning data comes next.
"""

from strata.api import DATASET
from strata.controllers.registration import config_only_kind

config_only_kind(DATASET, what="ingesting and versioning data")
