"""Ops tooling for the Triton model repository: validate, serve, infer, load-test, deploy."""

__version__ = "0.1.0"
