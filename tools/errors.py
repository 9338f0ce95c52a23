"""One root for every failure the tools report: the CLI catches `ToolsError` once and prints its message as one line.

Each concern raises its own subclass, so a caller can catch one concern's failures without catching the others'.
`exit_code` follows the convention of the linters and helm: 1 the job found a problem, 2 the command was misused.
"""

from __future__ import annotations


class ToolsError(Exception):
    """A failure meant for the user as is: the message says what went wrong and, where it can, what to do."""

    exit_code = 1


class UsageError(ToolsError):
    """The command line or a settings file asked for something that cannot be done (exit 2, like a bad flag)."""

    exit_code = 2


class ProcessError(ToolsError):
    """A child process did not start, exited early, or was not ready in time."""


class ServingError(ToolsError):
    """tritonserver could not be found, started or reached, or it refused a request."""


class ValidationError(ToolsError):
    """A repository or config could not be validated, or validation refused it."""


class LoadTestError(ToolsError):
    """A load test could not be run or read."""


class BenchmarkError(ToolsError):
    """A benchmark case could not be run."""


class MonitoringError(ToolsError):
    """Prometheus, promtool or a metrics endpoint is missing, did not start or cannot be read."""


class DeployError(ToolsError):
    """A Helm deployment step failed."""


class TuneError(ToolsError):
    """A tuning run could not start, measure or finish: a missing target or metric, or an SLO nothing meets."""
