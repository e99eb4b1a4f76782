"""Workloads that run inside pods managed by the Strata operator.

Each subpackage is built and tested on its own and does not import the operator:
``data`` (dataset directory layout), ``train`` (the DeepSpeed trainer).
"""
