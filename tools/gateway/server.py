"""The gateway's HTTP server, run in-process on a thread of its own (uvicorn's event loop there): `tools gateway`
runs it in the foreground, `tools serve --openai` beside the tritonserver it starts, tests beside theirs."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import uvicorn

from tools import settings
from tools.errors import ServingError
from tools.gateway.app import Backend, create_app
from tools.processes import require_free_port
from tools.serving import runtime

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


@dataclass
class GatewayOptions:
    """Where Triton's gRPC endpoint is, the model-control key its repository index may need, where to listen."""

    url: str
    host: str = settings.DEFAULT_HOST
    port: int = settings.DEFAULT_GATEWAY_PORT
    control_key: str | None = None
    port_option: str = "--port"  # the flag that changes the port, named when it is busy


class Gateway:
    """One running gateway; use as a context manager (or start/stop) so the thread always ends."""

    def __init__(self, options: GatewayOptions):
        self.options = options
        headers = {runtime.GRPC_RESTRICTED_HEADER_PREFIX + settings.CONTROL_KEY_HEADER: options.control_key} \
            if options.control_key else None
        self._startup_error: Exception | None = None
        app = create_app(Backend(options.url, headers), on_startup_error=self._failed)
        config = uvicorn.Config(app, host=options.host, port=options.port, log_level="warning", access_log=False,
                                timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="openai-gateway", daemon=True)

    def _failed(self, exc: Exception) -> None:
        self._startup_error = exc

    @property
    def url(self) -> str:
        """The OpenAI base URL (what `openai.OpenAI(base_url=...)` takes)."""
        return f"http://{self.options.host}:{self.options.port}/v1"

    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self, timeout: float = START_TIMEOUT_S) -> Gateway:
        """Listen once Triton's catalogue has been read; ServingError naming the cause otherwise."""
        require_free_port(self.options.host, self.options.port, self.options.port_option)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started or self._startup_error is not None:
            if self._startup_error is not None or not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                cause = getattr(self._startup_error, "message", None) or f"not listening after {timeout:.0f} s"
                if "restricted" in cause:  # the repository index is behind the model-control key
                    cause += f"; pass the server's model-control key (--control-key or ${settings.CONTROL_KEY_ENV})"
                raise ServingError(f"the OpenAI gateway on {self.options.host}:{self.options.port} did not start "
                                   f"(Triton gRPC {self.options.url}): {cause}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT_S)

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
