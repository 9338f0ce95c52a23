"""Triton's repository API for the tools that change a running server (rollout, tune): what is loaded, the running
configs, loads with an override.

Every call carries the control key (Triton's restricted-API header). A config override is what Triton serves from
then on, until a later override or an unload; the file on disk is only read again when it is newer than the override.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass

import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tools import settings
from tools.errors import ServingError

READY = "READY"
UNLOADING = "UNLOADING"  # dropped by the policy, still finishing its requests
LOAD_TIMEOUT_S = settings.SERVER_READY_TIMEOUT_S
POLL_INTERVAL_S = 0.05


class ControlError(ServingError):
    """Triton refused a repository call or could not be reached."""


@dataclass
class Control:
    """One server's repository API: `url` is host:port of its HTTP endpoint."""

    url: str
    control_key: str | None = None
    timeout: float = LOAD_TIMEOUT_S

    @property
    def headers(self) -> dict[str, str]:
        return {settings.CONTROL_KEY_HEADER: self.control_key} if self.control_key else {}

    def _call(self, what: str, method: str, *args, **kwargs):
        try:
            connection = httpclient.InferenceServerClient(self.url, connection_timeout=self.timeout,
                                                          network_timeout=self.timeout)
            with contextlib.closing(connection):
                return getattr(connection, method)(*args, **kwargs)
        except InferenceServerException as exc:
            # One line: Triton ends some messages with a newline, and quotes a Python model's traceback after "At:".
            message = " ".join((exc.message() or str(exc)).split("At:", 1)[0].split())
            if "restricted" in message or "control-key" in message or exc.status() == "403":
                message += f" (pass --control-key or set ${settings.CONTROL_KEY_ENV})"
            raise ControlError(f"{what}: {message}") from None
        except OSError as exc:
            raise ControlError(f"{what}: cannot reach the server at {self.url} ({exc})") from None

    def versions(self, model: str, states: tuple[str, ...] = (READY,)) -> list[int]:
        """The versions of `model` in one of `states` (default: the ones Triton serves now), ascending."""
        index = self._call("reading the repository index", "get_model_repository_index", headers=self.headers)
        return sorted(int(entry["version"]) for entry in index
                      if entry.get("name") == model and entry.get("state") in states and entry.get("version"))

    def ready_versions(self, model: str) -> list[int]:
        return self.versions(model)

    def config(self, model: str) -> dict:
        """The config Triton runs for `model` (an override when one was given), as Triton's JSON."""
        return self._call(f"reading the config of {model}", "get_model_config", model, headers=self.headers)

    def load(self, model: str, config: dict) -> None:
        """Load `model` with `config` as the override; returns when Triton has finished (or raises its refusal)."""
        self._call(f"loading {model}", "load_model", model, headers=self.headers, config=json.dumps(config))

    def wait_unloaded(self, model: str, versions: set[int], timeout: float) -> None:
        """Until none of `versions` is READY or UNLOADING: Triton finishes a dropped version's requests (each holds
        the version it started on), then unloads it."""
        deadline = time.monotonic() + timeout
        while set(self.versions(model, (READY, UNLOADING))) & versions:
            if time.monotonic() > deadline:
                raise ControlError(f"{model} version(s) {sorted(versions)} still serving after {timeout:.0f} s")
            time.sleep(POLL_INTERVAL_S)

