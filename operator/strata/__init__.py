"""Strata: a Kubernetes operator for the generative-AI lifecycle."""

__version__ = "0.1.0"
