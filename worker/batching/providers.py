"""The two batch APIs behind one small interface: submit, ended, results.

``results`` yields (custom_id, kind, payload) with kind ``succeeded`` (payload: the provider's
response object, turned into a JudgeReply by the judge's own ``reply_from``), ``rejected``
(the request can never succeed as sent: payload is the reason) or ``retry`` (errored,
expired, canceled: payload is the reason).
"""
from __future__ import annotations

import json
from collections.abc import Iterator

from openai.types.chat import ChatCompletion

from worker.batching.store import Item
from worker.judges.base import JudgeReply
from worker.retrying import REJECTED_STATUS

ENDPOINT = "/v1/chat/completions"
_REJECTED_ANTHROPIC = {"invalid_request_error", "request_too_large"}


class AnthropicBatches:
    """Anthropic Message Batches: custom_id = score id, params = the online request's params."""

    def __init__(self, judge):
        self.judge = judge
        self.batches = judge.client.messages.batches

    def submit(self, items: list[Item]) -> str:
        requests = [{"custom_id": i.score_id, "params": self.judge.request_params(i.judge_request, i.repair_arg)}
                    for i in items]
        return self.batches.create(requests=requests).id

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

    def reply(self, payload, item: Item) -> JudgeReply:
        return self.judge.reply_from(payload, item.judge_request)


class OpenAIBatches:
    """OpenAI Batch API: a JSONL file of /v1/chat/completions bodies, custom_id = score id."""

    ENDED = ("completed", "failed", "expired", "cancelled")

    def __init__(self, judge):
        self.judge = judge
        self.client = judge.client

    def submit(self, items: list[Item]) -> str:
        lines = [json.dumps({"custom_id": i.score_id, "method": "POST", "url": ENDPOINT,
                             "body": self.judge.request_params(i.judge_request, i.repair_arg, tool=i.tool)})
                 for i in items]
        upload = self.client.files.create(file=("tracejudge-batch.jsonl", ("\n".join(lines) + "\n").encode()),
                                          purpose="batch")
        return self.client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT,
                                          completion_window="24h",
                                          metadata={"source": "tracejudge"}).id

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

    def reply(self, payload, item: Item) -> JudgeReply:
        return self.judge.reply_from(payload, item.judge_request, tool=item.tool)


def _openai_line(line: dict) -> tuple[str, str, object]:
    custom_id = line.get("custom_id") or ""
    response = line.get("response") or {}
    status = response.get("status_code")
    if status == 200:
        return custom_id, "succeeded", ChatCompletion.model_validate(response.get("body") or {})
    error = line.get("error") or ((response.get("body") or {}).get("error")) or {}
    reason = f"HTTP {status}: " if status else ""
    reason += f"{error.get('code') or error.get('type') or 'error'}: {str(error.get('message'))[:300]}"
    return custom_id, "rejected" if status in REJECTED_STATUS else "retry", reason


def batches_for(judge):
    return {"anthropic": AnthropicBatches, "openai": OpenAIBatches}[judge.provider](judge)
