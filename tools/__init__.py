"""Ops tooling for a Triton model repository: validate, serve, infer, load-test, benchmark, deploy."""

from importlib.metadata import version

__version__ = version("triton-model-toolkit")  # one source: pyproject.toml, through the installed metadata
