"""Streams the prompt's words back one response each, `delay_ms` apart (request parameter, default 5), up to
`max_tokens` (default 64); `stream` false sends the whole text in one response. The last response carries
finish_reason, prompt_tokens and completion_tokens with the final flag, as `generate` does."""

import json
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _text(piece: str):
    return pb_utils.Tensor("text_output", np.array([piece.encode()], dtype=np.object_))


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:  # a thread per request: the stream of one never holds up the next
            threading.Thread(target=self._answer, args=(request,), daemon=True).start()
        return None

    def _answer(self, request) -> None:
        sender = request.get_response_sender()
        parameters = json.loads(request.parameters() or "{}")
        prompt = pb_utils.get_input_tensor_by_name(request, "text_input")
        words = [] if prompt is None else prompt.as_numpy().reshape(-1)[0].decode().split()
        if not words:
            error = pb_utils.TritonError("text_input is missing or empty", pb_utils.TritonError.INVALID_ARG)
            sender.send(pb_utils.InferenceResponse(error=error), flags=FINAL)
            return
        stream_input = pb_utils.get_input_tensor_by_name(request, "stream")
        stream = bool(parameters.get("stream", False if stream_input is None else stream_input.as_numpy().all()))
        limit, delay = int(parameters.get("max_tokens", 64)), float(parameters.get("delay_ms", 5)) / 1000
        pieces = [word + " " for word in words[:limit]]
        reason = "length" if len(words) > limit else "stop"
        if stream:
            for piece in pieces[:-1]:
                time.sleep(delay)
                sender.send(pb_utils.InferenceResponse([_text(piece)]))
            last = pieces[-1] if pieces else ""
        else:
            time.sleep(delay * len(pieces))
            last = "".join(pieces)
        counts = [pb_utils.Tensor("finish_reason", np.array([reason.encode()], dtype=np.object_)),
                  pb_utils.Tensor("prompt_tokens", np.array([len(words)], dtype=np.int32)),
                  pb_utils.Tensor("completion_tokens", np.array([len(pieces)], dtype=np.int32))]
        time.sleep(delay)
        sender.send(pb_utils.InferenceResponse([_text(last), *counts]), flags=FINAL)
