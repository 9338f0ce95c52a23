"""The `tools` command line: thin command functions over the library packages, one module per concern."""

from tools.cli import bench, dashboards, deploy, gateway, infer, loadtest, rollout, serving, tune, validate
from tools.cli.app import app

__all__ = ["app", "bench", "dashboards", "deploy", "gateway", "infer", "loadtest", "rollout", "serving", "tune",
           "validate"]
