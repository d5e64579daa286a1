"""The two batch APIs behind one small interface: line, submit, ended, results, failure, cleanup.

``line`` is an item's request as it goes over the wire (the cycle sizes batches by it);
``failure`` is why a whole batch failed (OpenAI: validation, the enqueued-token limit), the
reason its requests are retried with; ``cleanup`` deletes the provider files we created.

``results`` yields (custom_id, kind, payload) with kind ``succeeded`` (payload: the provider's
response object, turned into a JudgeReply by the judge's own ``reply_from``), ``rejected``
(the request can never succeed as sent: payload is the reason) or ``retry`` (errored,
expired, canceled: payload is the reason).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Final, TypeAlias

from anthropic.types import Message

from worker.batching.store import Item
from worker.json_types import JSONDict
from worker.judges import AnthropicJudge, Judge, JudgeReply, OpenAIJudge
from worker.retrying import REJECTED_STATUS, status_of

log = logging.getLogger("tracejudge.batching")

ENDPOINT: Final = "/v1/chat/completions"
_REJECTED_ANTHROPIC = {"invalid_request_error", "request_too_large"}


class AnthropicBatches:
    """Anthropic Message Batches: custom_id = score id, params = the online request's params."""

    def __init__(self, judge: AnthropicJudge) -> None:
        self.judge = judge
        self.batches = judge.client.messages.batches

    def line(self, item: Item) -> bytes:
        return json.dumps(self._request(item)).encode()

    def _request(self, item: Item) -> JSONDict:
        return {"custom_id": item.score_id, "params": self.judge.request_params(item.judge_request, item.repair_arg)}

    def submit(self, items: list[Item]) -> str:
                # Each request is plain JSON (the online body, AnthropicJudge.request_params), not the
        # SDK's Request TypedDict, which the SDK only serialises.
        return self.batches.create(requests=[self._request(i) for i in items]).id  # type: ignore[misc]

    def failure(self, batch_id: str) -> str | None:
        return None  # a Message Batch fails per request, never as a whole

    def cleanup(self, batch_id: str) -> int:
        return 0  # no files: results are served by the batch itself

    def ended(self, batch_id: str) -> bool:
        return self.batches.retrieve(batch_id).processing_status == "ended"

    def results(self, batch_id: str) -> Iterator[tuple[str, str, object]]:
        for entry in self.batches.results(batch_id):
            result = entry.result
            if result.type == "succeeded":
                yield entry.custom_id, "succeeded", result.message
            elif result.type == "errored":
                error = result.error.error
                kind = "rejected" if error.type in _REJECTED_ANTHROPIC else "retry"
                yield entry.custom_id, kind, f"{error.type}: {error.message[:300]}"
            else:  # expired, canceled
                yield entry.custom_id, "retry", f"batch request {result.type}"

    def reply(self, payload: object, item: Item) -> JudgeReply:
        if not isinstance(payload, (dict, Message)):
            raise TypeError(f"a succeeded batch result is a Message, not {type(payload).__name__}")
        return self.judge.reply_from(payload, item.judge_request)


class OpenAIBatches:
    """OpenAI Batch API: a JSONL file of /v1/chat/completions bodies, custom_id = score id."""

    ENDED = ("completed", "failed", "expired", "cancelled")

    def __init__(self, judge: OpenAIJudge) -> None:
        self.judge = judge
        self.client = judge.client

    def line(self, item: Item) -> bytes:
        return json.dumps({"custom_id": item.score_id, "method": "POST", "url": ENDPOINT,
                           "body": self.judge.request_params(item.judge_request, item.repair_arg, tool=item.tool)}).encode()

    def submit(self, items: list[Item]) -> str:
        data = b"".join(self.line(i) + b"\n" for i in items)
        upload = self.client.files.create(file=("tracejudge-batch.jsonl", data), purpose="batch")
        try:
            return self.client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT,
                                              completion_window="24h",
                                              metadata={"source": "tracejudge"}).id
        except Exception:
            self._delete(upload.id)  # no batch will ever read it
            raise

    def failure(self, batch_id: str) -> str | None:
        batch = self.client.batches.retrieve(batch_id)
        if batch.status != "failed":
            return None
        errors = (batch.errors.data if batch.errors else None) or []
        text = "; ".join(f"{e.code or 'error'}: {e.message or ''}" for e in errors[:3]) or "no reason given"
        return f"batch failed: {text}"[:400]

    def cleanup(self, batch_id: str) -> int:
        """Delete the batch's input, output and error files (we created them, or asked for them)."""
        batch = self.client.batches.retrieve(batch_id)
        ids = [f for f in (batch.input_file_id, batch.output_file_id, batch.error_file_id) if f]
        return sum(self._delete(f) for f in ids)

    def _delete(self, file_id: str) -> bool:
        try:
            self.client.files.delete(file_id)
            return True
        except Exception as exc:  # boundary: a file left behind costs storage, not correctness
            if status_of(exc) != 404:
                log.warning("could not delete a batch file at the provider",
                            extra={"file_id": file_id, "status": status_of(exc), "error_type": type(exc).__name__})
            return False

    def ended(self, batch_id: str) -> bool:
        return self.client.batches.retrieve(batch_id).status in self.ENDED

    def results(self, batch_id: str) -> Iterator[tuple[str, str, object]]:
        batch = self.client.batches.retrieve(batch_id)
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            for line in self.client.files.content(file_id).text.splitlines():
                if line.strip():
                    yield _openai_line(json.loads(line))
        # A batch that failed validation has no files: its requests are missing from the
        # results and the cycle retries them.

    def reply(self, payload: object, item: Item) -> JudgeReply:
        if not isinstance(payload, dict):
            raise TypeError(f"a succeeded batch result is a completion object, not {type(payload).__name__}")
        return self.judge.reply_from(payload, item.judge_request, tool=item.tool)


def _openai_line(line: JSONDict) -> tuple[str, str, object]:
    custom_id = line.get("custom_id") or ""
    response = line.get("response") or {}
    status = response.get("status_code")
    if status == 200:
        return custom_id, "succeeded", response.get("body") or {}  # the completion as plain JSON, as online
    error = line.get("error") or ((response.get("body") or {}).get("error")) or {}
    reason = f"HTTP {status}: " if status else ""
    reason += f"{error.get('code') or error.get('type') or 'error'}: {str(error.get('message'))[:300]}"
    return custom_id, "rejected" if status in REJECTED_STATUS else "retry", reason


BatchAPI: TypeAlias = AnthropicBatches | OpenAIBatches


def batches_for(judge: Judge) -> BatchAPI:
    """The batch API of a provider's judge. Batch mode needs a hosted provider (rubric
    validation), so the judge is always one; anything else (a runtime's wrong-model stand-in)
    has no batch API."""
    if isinstance(judge, AnthropicJudge):
        return AnthropicBatches(judge)
    if isinstance(judge, OpenAIJudge):
        return OpenAIBatches(judge)
    raise TypeError(f"{type(judge).__name__} ({judge.provider}) has no batch API")
