"""`tools infer`: call any model on a running server and show its answer (a streaming model's text as it arrives)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from tools import settings
from tools.cli import options
from tools.cli.app import app, console, data_console


@app.command("infer")
def infer_command(
    model: str = typer.Argument(..., help="Model to call (e.g. embed, generate)."),
    texts: list[str] | None = typer.Argument(None, show_default=False,
                                             help="Texts for the model's text input: a prompt each for a model "
                                                  "that does not batch or streams, one batch otherwise (default: "
                                                  "one text of the built-in queries)."),
    url: str | None = options.url_option(),
    protocol: settings.Protocol | None = options.protocol_option(),
    model_version: str = options.model_version_option(),
    params: list[str] = options.param_option(),
    shapes: list[str] = options.shape_option(),
    input_data: Path | None = options.input_data_option(),
    text_input: str | None = options.text_input_option(),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object to stdout (after a stream ends)."),
) -> None:
    """Call a model on a running server; what it prints follows what the model is.

    An embedding model (the EMBEDDING output): the embeddings' shape and their cosine similarity matrix. A decoupled
    model: its text as it streams (over gRPC, or HTTP's generate_stream endpoint), then time to first text, responses,
    tokens/s and what its final response says, on stderr. Any other model: each output's dtype, shape and values.
    Inputs the texts do not fill get generated data of their declared dtype and shape, or come from --input-data.
    """
    from tools.loadtest import corpus
    from tools.serving import client, infer, payloads

    if texts and input_data:
        from tools.errors import UsageError

        raise UsageError("give texts or --input-data, not both")
    protocol, address = client.resolve(url, protocol)
    call = infer.Call(model, texts or (), model_version, payloads.parse_params(params),
                      payloads.parse_shapes(shapes), payloads.read_input_data(input_data) if input_data else None,
                      text_input, fallback_texts=corpus.load(corpus.QUERIES_CORPUS))
    out = data_console()

    def show_piece(piece: client.Piece) -> None:
        sys.stdout.write(piece.text)
        sys.stdout.flush()

    def show_result(result: infer.StreamResult | infer.OutputsResult) -> None:
        if isinstance(result, infer.StreamResult):
            sys.stdout.write("\n")
            sys.stdout.flush()
            console.print(result.summary(), highlight=False, markup=False, soft_wrap=True)
        else:
            infer.render_outputs(result, out)

    live = not as_json
    result = infer.run_any(call, protocol, address, on_piece=show_piece if live else None,
                           on_result=show_result if live else None)
    if isinstance(result, infer.InferResult):
        if as_json:
            typer.echo(json.dumps(result.as_json()))
        else:
            infer.render(result, out)
    elif as_json:
        typer.echo(json.dumps(infer.as_json(protocol, address, model, result)))
