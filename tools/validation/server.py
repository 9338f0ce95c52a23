"""`--server`: the final word. Load each model in a real tritonserver and report what Triton refuses."""

from __future__ import annotations

import re
from collections.abc import Callable

from tools import settings
from tools.errors import ServingError, ToolsError
from tools.repository import CONFIG_FILE, Repository
from tools.serving import runtime
from tools.validation.findings import Finding

LOAD_TIMEOUT_S = settings.SERVER_READY_TIMEOUT_S
# Config errors found while Triton reads a model folder come back over the API only as this phrase;
# the reason is in the server log.
_POLL_FAILED = "failed to poll from model repository"


def poll_failure(log: str, name: str) -> str | None:
    """Triton's logged reason for refusing to read a model folder's config, if it logged one."""
    match = re.search(rf"Poll failed for model directory '{re.escape(name)}': (.*?)\"?$", log, re.MULTILINE)
    return match[1] if match else None


def check_with_server(repository: Repository, progress: Callable[[str], None] = lambda name: None,
                      options: runtime.ServerOptions | None = None) -> list[Finding]:
    """Start a server with no models, load every model after the models it calls, record each refusal."""
    options = options or runtime.ServerOptions.on_free_ports(repository=repository.root, models=[])
    findings: list[Finding] = []
    try:
        with runtime.running_server(options) as server:
            for name in repository.load_order():
                progress(name)
                refusal = refusal_of(server, name)
                if refusal is not None and _POLL_FAILED in refusal:
                    refusal = poll_failure(server.log_text(), name) or refusal
                if refusal is not None:
                    findings.append(Finding("E901", f"Triton did not load it: {refusal}", name,
                                            repository.models[name].path / CONFIG_FILE))
    except ToolsError as exc:
        findings.append(Finding("E902", f"could not start tritonserver to check the repository: {exc}",
                                file=repository.root))
    return findings


def refusal_of(server: runtime.TritonServer, name: str, timeout: float = LOAD_TIMEOUT_S) -> str | None:
    """Why Triton did not load one model (its refusal, or that it never answered), or None when it loaded."""
    try:
        server.load_model(name, timeout=timeout)
    except runtime.NoAnswerError as exc:
        return f"it never answered the load ({exc})"
    except ServingError as exc:
        return str(exc)
    return None
