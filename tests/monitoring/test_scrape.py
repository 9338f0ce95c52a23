"""tools.monitoring.scrape reads Triton's /metrics with prometheus_client's parser: escaped label values come back as
the model names they are, both from a hand-written exposition and from a real tritonserver."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.support.models import write_echo_model
from tools.monitoring import metrics, scrape
from tools.serving import runtime

# A quote, a backslash and a newline: the three characters the text format escapes inside a label value.
ODD_NAME = 'say "hi"\\there\nnow'
ENSEMBLE = """\
platform: "ensemble"
max_batch_size: 8
input [{ name: "X" data_type: TYPE_FP32 dims: [ 2 ] }]
output [{ name: "Y" data_type: TYPE_FP32 dims: [ 2 ] }]
ensemble_scheduling { step [ { model_name: "echo" model_version: -1
  input_map { key: "X" value: "X" } output_map { key: "Y" value: "Y" } } ] }
"""


def test_escaped_label_values_are_unescaped():
    text = ("# HELP nv_inference_request_success Number of successful inference requests\n"
            "# TYPE nv_inference_request_success counter\n"
            'nv_inference_request_success{model="say \\"hi\\"\\\\there\\nnow",version="1"} 7\n')
    assert scrape.parse(text) == {(metrics.REQUEST_SUCCESS, (("model", ODD_NAME), ("version", "1"))): 7.0}


def test_text_that_is_not_the_exposition_format_is_refused():
    with pytest.raises(ValueError):
        scrape.parse('nv_inference_count{model="unterminated} 1\n')


def test_a_real_servers_metrics_name_an_oddly_named_model_as_it_is(tmp_path: Path):
    """Triton escapes the ensemble's name in its labels; the figures carry it back unescaped, and every sample
    line Triton writes is read."""
    repository = tmp_path / "repository"
    write_echo_model(repository)
    (repository / ODD_NAME / "1").mkdir(parents=True)  # an ensemble runs no stub: any directory name loads
    (repository / ODD_NAME / "config.pbtxt").write_text(ENSEMBLE)
    with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=repository), timeout=60) as server:
        before = scrape.scrape(server.metrics_url)
        # gRPC, because tritonclient's HTTP client sends the name percent-encoded and Triton does not decode it.
        connection = grpcclient.InferenceServerClient(server.grpc_url)
        tensor = grpcclient.InferInput("X", [1, 2], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 2), np.float32))
        for _ in range(3):
            connection.infer(ODD_NAME, [tensor])
        connection.close()
        # Triton counts a composing model's request a moment after the ensemble has answered: read until the step's
        # count has caught up (a few tries at most).
        for _ in range(50):
            with urllib.request.urlopen(server.metrics_url, timeout=5) as response:
                text = response.read().decode()
            if {f.model: f.requests for f in scrape.model_figures(before, scrape.parse(text))}.get("echo") == 3:
                break
            time.sleep(0.1)
    assert '\\"hi\\"\\\\there\\nnow' in text, "Triton escapes the label value"
    after = scrape.parse(text)
    sample_lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(after) == len(sample_lines)
    figures = {f.model: f for f in scrape.model_figures(before, after)}
    assert set(figures) == {ODD_NAME, "echo"}
    assert figures[ODD_NAME].requests == figures["echo"].requests == 3
