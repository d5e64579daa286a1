"""How self-hosted servers treat structured-output parameters, for the judge emulator: as
harsh as the real ones (read from their sources).

- llama-cpp-python's server types ``response_format`` as text | json_object: a ``json_schema``
  request fails validation and its error handler answers HTTP 500 naming the field.
- llama.cpp's ``llama-server`` without ``--jinja`` answers a request with ``tools`` 500
  "tools param requires --jinja flag"; its ``/v1/messages`` maps a forced tool to
  ``tool_choice: required`` and passes no ``output_config`` on (the field is dropped), so a
  model whose template knows no tools answers prose.
- JSON mode with the schema in the prompt: a server that honours ``json_object`` returns JSON;
  the emulator finds the schema in the prompt text, as a model reading it would.
"""
from __future__ import annotations

import json

STRUCTURED_DEFAULTS = {
    "openai_json_schema": True,       # False: json_schema refused (with openai_json_schema_status)
    "openai_json_schema_status": 400,  # 500: llama-cpp-python's answer
    "openai_tools": True,             # False: tools refused with 500 (llama-server without --jinja)
    "anthropic_tools": "call",        # call | refuse (500, no --jinja) | ignore (prose, no tool call)
    "anthropic_output_config": True,  # False: the field is dropped (llama.cpp's /v1/messages)
    "served_models": None,            # a list: GET /v1/models answers it (vLLM, llama.cpp, Ollama shapes)
    "props": None,                    # a dict: GET /props answers it (llama.cpp's model_path, model_alias)
}

JSON_SCHEMA_500 = ("1 validation error for CreateChatCompletionRequest\nresponse_format.type\n  Input should be "
                   "'text' or 'json_object' [type=literal_error, input_value='json_schema', input_type=str]")
NO_JINJA = "tools param requires --jinja flag"


def schema_in_text(text: str) -> dict | None:
    """The last JSON object schema (one with "properties") written in the prompt text."""
    decoder, found, start = json.JSONDecoder(), None, text.find("{")
    while start != -1:
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict) and isinstance(value.get("properties"), dict):
            found = value
        start = text.find("{", end)
    return found


def output_config_schema(body: dict, cfg: dict) -> dict | None:
    if not cfg["anthropic_output_config"]:
        return None
    fmt = ((body.get("output_config") or {}).get("format") or {})
    return fmt.get("schema") if fmt.get("type") == "json_schema" else None
