"""Batch APIs of the judge emulator: Anthropic Message Batches and the OpenAI Files + Batch API.

Routes (as the official specs define them; the real SDKs call them):
    Anthropic  POST /v1/messages/batches            create {requests: [{custom_id, params}]}
               GET  /v1/messages/batches/{id}       retrieve (processing_status, request_counts, results_url)
               GET  /v1/messages/batches/{id}/results   JSONL, one {custom_id, result} per request
               POST /v1/messages/batches/{id}/cancel
    OpenAI     POST /v1/files (multipart: purpose, file)   GET /v1/files/{id}   GET /v1/files/{id}/content
               POST /v1/batches {input_file_id, endpoint, completion_window}
               GET  /v1/batches/{id}                POST /v1/batches/{id}/cancel

A batch is processed once ``batch_delay_seconds`` have passed since it was created (checked
when it is read); each request is answered exactly as the online endpoint would answer it,
faults included (an HTTP fault becomes an errored item), with its usage. ``batch_expire_rate``
expires that share of requests instead, as a batch that hit its 24-hour window would.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
import uuid
from email.parser import BytesParser
from email.policy import HTTP

from emulators.http_base import JsonHandler, Reply, is_invalid

_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
OPENAI_ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/completions")


class Raw:
    """A non-JSON answer body (JSONL results, file contents)."""

    def __init__(self, data: bytes, content_type: str):
        self.data, self.content_type = data, content_type


class RawBodyHandler(JsonHandler):
    """JsonHandler that also hands the raw request body to the app (multipart uploads) and
    writes Raw answers as they are."""

    def _serve(self, method: str):
        from urllib.parse import parse_qs, urlsplit

        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = None
        if raw and "multipart/" not in (self.headers.get("Content-Type") or ""):
            try:
                body = json.loads(raw)
            except ValueError:
                from emulators.http_base import _INVALID

                body = _INVALID
        try:
            status, payload, headers = self.app.handle(method, parts.path, query, self.headers, body, raw=raw)
        except Reply as reply:
            status, payload, headers = reply.status, reply.body, reply.headers
        if isinstance(payload, Raw):
            data, content_type = payload.data, payload.content_type
        else:
            data, content_type = (b"" if payload is None else json.dumps(payload).encode()), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, str(value))
        self.end_headers()
        self.wfile.write(data)


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


class BatchRoutes:
    """Batch state and routes; ``emu`` is the JudgeEmulator whose online answers it reuses."""

    def __init__(self, emu):
        self.emu = emu
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.anthropic: dict[str, dict] = {}
        self.openai: dict[str, dict] = {}
        self.files: dict[str, dict] = {}

    def route(self, method, path, headers, body, raw):
        """The answer for a batch route, or None when ``path`` is not one."""
        parts = path.strip("/").split("/")
        if parts[:3] == ["v1", "messages", "batches"]:
            self.emu._auth("anthropic", headers)
            if method == "POST" and len(parts) == 3 and len(raw or b"") > self.emu.config["batch_max_request_bytes"]:
                raise _anthropic_error(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.")
            return self._anthropic(method, parts[3:], headers, body)
        if parts[:2] == ["v1", "files"]:
            self.emu._auth("openai", headers)
            return self._files(method, parts[2:], headers, raw)
        if parts[:2] == ["v1", "batches"]:
            self.emu._auth("openai", headers)
            return self._openai(method, parts[2:], body)
        return None

    # -- Anthropic ------------------------------------------------------------------------
    def _anthropic(self, method, rest, headers, body):
        if method == "POST" and not rest:
            return 200, self._anthropic_create(body), {}
        batch = self.anthropic.get(rest[0]) if rest else None
        if batch is None:
            raise _anthropic_error(404, "not_found_error", "message batch not found")
        if method == "GET" and len(rest) == 1:
            return 200, self._anthropic_view(batch, headers), {}
        if method == "POST" and rest[1:] == ["cancel"]:
            with self._lock:
                if batch["processing_status"] == "in_progress":
                    batch["processing_status"] = "canceling"
                    batch["cancel_initiated_at"] = time.time()
            return 200, self._anthropic_view(batch, headers), {}
        if method == "GET" and rest[1:] == ["results"]:
            self._anthropic_settle(batch)
            if batch["processing_status"] != "ended":
                raise _anthropic_error(400, "invalid_request_error", "batch is still processing; results are not ready")
            lines = [json.dumps({"custom_id": cid, "result": res}) for cid, res in batch["results"]]
            return 200, Raw(("\n".join(lines) + "\n").encode(), "application/binary"), {}
        raise _anthropic_error(404, "not_found_error", f"no route {method} /v1/messages/batches/{'/'.join(rest)}")

    def _anthropic_create(self, body):
        if is_invalid(body) or not isinstance(body, dict) or not isinstance(body.get("requests"), list):
            raise _anthropic_error(400, "invalid_request_error", "requests: Field required")
        requests = body["requests"]
        if not requests or len(requests) > 100_000:
            raise _anthropic_error(400, "invalid_request_error", "requests: must hold 1 to 100,000 items")
        seen = set()
        for i, request in enumerate(requests):
            cid = request.get("custom_id") if isinstance(request, dict) else None
            if not isinstance(cid, str) or not _CUSTOM_ID.match(cid):
                raise _anthropic_error(400, "invalid_request_error", f"requests.{i}.custom_id: must match ^[a-zA-Z0-9_-]{{1,64}}$")
            if cid in seen:
                raise _anthropic_error(400, "invalid_request_error", f"requests.{i}.custom_id: duplicate custom_id {cid}")
            if not isinstance(request.get("params"), dict):
                raise _anthropic_error(400, "invalid_request_error", f"requests.{i}.params: Field required")
            seen.add(cid)
        now = time.time()
        batch = {"id": _id("msgbatch_"), "type": "message_batch", "processing_status": "in_progress",
                 "created_at": now, "ended_at": None, "cancel_initiated_at": None,
                 "requests": requests, "results": None}
        with self._lock:
            self.anthropic[batch["id"]] = batch
            self.emu.count("batch:anthropic:batches")
            self.emu.count("batch:anthropic:requests", len(requests))
        return self._anthropic_view(batch, None)

    def _anthropic_settle(self, batch) -> None:
        """Process the batch once its delay has passed (or finish a cancel)."""
        with self._lock:
            if batch["results"] is not None:
                return
            canceling = batch["processing_status"] == "canceling"
            if not canceling and time.time() - batch["created_at"] < self.emu.config["batch_delay_seconds"]:
                return
            results = []
            for request in batch["requests"]:
                if canceling:
                    results.append((request["custom_id"], {"type": "canceled"}))
                    continue
                if self.emu.rng.random() < self.emu.config["batch_expire_rate"]:
                    results.append((request["custom_id"], {"type": "expired"}))
                    continue
                status, payload = self.emu.answer_offline("anthropic", request["params"])
                if status == 200:
                    payload["usage"]["service_tier"] = "batch"
                    results.append((request["custom_id"], {"type": "succeeded", "message": payload}))
                else:
                    results.append((request["custom_id"], {"type": "errored", "error": payload}))
            batch["results"] = results
            batch["processing_status"] = "ended"
            batch["ended_at"] = time.time()

    def _anthropic_view(self, batch, headers) -> dict:
        self._anthropic_settle(batch)
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if batch["results"] is None:
            counts["processing"] = len(batch["requests"])
        else:
            for _, result in batch["results"]:
                counts[result["type"]] += 1
        ended = batch["processing_status"] == "ended"
        host = (headers.get("Host") if headers else None) or f"{self.emu.host}:{self.emu.port}"
        return {"id": batch["id"], "type": "message_batch", "processing_status": batch["processing_status"],
                "request_counts": counts, "created_at": _iso(batch["created_at"]),
                "expires_at": _iso(batch["created_at"] + 86400), "archived_at": None,
                "ended_at": _iso(batch["ended_at"]) if batch["ended_at"] else None,
                "cancel_initiated_at": _iso(batch["cancel_initiated_at"]) if batch["cancel_initiated_at"] else None,
                "results_url": f"http://{host}/v1/messages/batches/{batch['id']}/results" if ended else None}

    # -- OpenAI files -----------------------------------------------------------------------
    def _files(self, method, rest, headers, raw):
        if method == "POST" and not rest:
            fields = _multipart(headers.get("Content-Type") or "", raw)
            if "file" not in fields or "purpose" not in fields:
                raise _openai_error(400, "invalid_request_error", "file and purpose are required")
            purpose = fields["purpose"][1].decode()
            if purpose not in ("batch", "assistants", "fine-tune", "vision", "user_data", "evals"):
                raise _openai_error(400, "invalid_request_error", f"Invalid purpose {purpose!r}", param="purpose")
            filename, data = fields["file"]
            if purpose == "batch" and len(data) > self.emu.config["batch_max_file_bytes"]:
                raise _openai_error(400, "invalid_request_error", "File is too large for a batch input file.",
                                    param="file")
            return 200, self._store_file(filename or "upload", data, purpose), {}
        file = self.files.get(rest[0]) if rest else None
        if file is None:
            raise _openai_error(404, "invalid_request_error", "No such File object", param="id")
        if method == "DELETE" and len(rest) == 1:
            with self._lock:
                self.files.pop(rest[0], None)
                self.emu.count("batch:openai:files_deleted")
            return 200, {"id": rest[0], "object": "file", "deleted": True}, {}
        if method == "GET" and len(rest) == 1:
            return 200, file["object"], {}
        if method == "GET" and rest[1:] == ["content"]:
            return 200, Raw(file["data"], "application/octet-stream"), {}
        raise _openai_error(404, "invalid_request_error", f"no route {method} /v1/files/{'/'.join(rest)}")

    def _store_file(self, filename, data: bytes, purpose: str) -> dict:
        obj = {"id": _id("file-"), "object": "file", "bytes": len(data), "created_at": int(time.time()),
               "filename": filename, "purpose": purpose, "status": "processed", "expires_at": None,
               "status_details": None}
        with self._lock:
            self.files[obj["id"]] = {"object": obj, "data": data}
        return obj

    # -- OpenAI batches ---------------------------------------------------------------------
    def _openai(self, method, rest, body):
        if method == "POST" and not rest:
            return 200, self._openai_create(body), {}
        batch = self.openai.get(rest[0]) if rest else None
        if batch is None:
            raise _openai_error(404, "invalid_request_error", "No batch found", param="batch_id")
        if method == "GET" and len(rest) == 1:
            self._openai_settle(batch)
            return 200, dict(batch["object"]), {}
        if method == "POST" and rest[1:] == ["cancel"]:
            with self._lock:
                if batch["object"]["status"] in ("validating", "in_progress"):
                    batch["object"]["status"] = "cancelling"
                    batch["object"]["cancelling_at"] = int(time.time())
            self._openai_settle(batch)
            return 200, dict(batch["object"]), {}
        raise _openai_error(404, "invalid_request_error", f"no route {method} /v1/batches/{'/'.join(rest)}")

    def _openai_create(self, body):
        if is_invalid(body) or not isinstance(body, dict):
            raise _openai_error(400, "invalid_request_error", "request body is not a JSON object")
        for key in ("input_file_id", "endpoint", "completion_window"):
            if key not in body:
                raise _openai_error(400, "invalid_request_error", f"Missing required parameter: '{key}'.", param=key)
        if body["endpoint"] not in OPENAI_ENDPOINTS:
            raise _openai_error(400, "invalid_request_error", f"Invalid endpoint {body['endpoint']!r}", param="endpoint")
        if body["completion_window"] != "24h":
            raise _openai_error(400, "invalid_request_error", "completion_window must be '24h'", param="completion_window")
        file = self.files.get(body["input_file_id"])
        if file is None or file["object"]["purpose"] != "batch":
            raise _openai_error(400, "invalid_request_error", "input_file_id must name a file uploaded with purpose 'batch'",
                                param="input_file_id")
        now = int(time.time())
        obj = {"id": _id("batch_"), "object": "batch", "endpoint": body["endpoint"], "errors": None,
               "input_file_id": body["input_file_id"], "completion_window": "24h", "status": "validating",
               "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
               "expires_at": now + 86400, "finalizing_at": None, "completed_at": None, "failed_at": None,
               "expired_at": None, "cancelling_at": None, "cancelled_at": None,
               "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
               "usage": None}
        lines, errors = _parse_input(file["data"], body["endpoint"])
        limit = self.emu.config["batch_enqueued_token_limit"]
        if not errors and limit is not None and len(file["data"]) / 4 > limit:  # ~4 bytes a token
            errors = [{"code": "token_limit_exceeded", "line": None,
                       "message": f"Enqueued token limit reached for this model. Limit: {limit} enqueued tokens."}]
        if errors:
            obj.update(status="failed", failed_at=now, errors={"object": "list", "data": errors})
        else:
            obj.update(status="in_progress", in_progress_at=now)
            obj["request_counts"]["total"] = len(lines)
        batch = {"object": obj, "lines": lines, "created": time.time(), "done": bool(errors)}
        with self._lock:
            self.openai[obj["id"]] = batch
            self.emu.count("batch:openai:batches")
            self.emu.count("batch:openai:requests", len(lines))
        return dict(obj)

    def _openai_settle(self, batch) -> None:
        with self._lock:
            obj = batch["object"]
            if batch["done"]:
                return
            cancelling = obj["status"] == "cancelling"
            if not cancelling and time.time() - batch["created"] < self.emu.config["batch_delay_seconds"]:
                return
            out, err = [], []
            usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
                     "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
            for line in batch["lines"]:
                entry = {"id": _id("batch_req_"), "custom_id": line["custom_id"], "response": None, "error": None}
                if cancelling:
                    entry["error"] = {"code": "batch_cancelled", "message": "This request was cancelled."}
                elif self.emu.rng.random() < self.emu.config["batch_expire_rate"]:
                    entry["error"] = {"code": "batch_expired",
                                      "message": "This request could not be executed before the completion window expired."}
                else:
                    status, payload = self.emu.answer_offline("openai", line["body"])
                    entry["response"] = {"status_code": status, "request_id": _id("req_"), "body": payload}
                    if status == 200:
                        u = payload["usage"]
                        usage["input_tokens"] += u["prompt_tokens"]
                        usage["output_tokens"] += u["completion_tokens"]
                        usage["total_tokens"] += u["total_tokens"]
                        usage["input_tokens_details"]["cached_tokens"] += u["prompt_tokens_details"]["cached_tokens"]
                        out.append(entry)
                        continue
                err.append(entry)
            now = int(time.time())
            for entries, key in ((out, "output_file_id"), (err, "error_file_id")):
                if entries:
                    data = ("\n".join(json.dumps(e) for e in entries) + "\n").encode()
                    obj[key] = self._store_file_locked(f"{obj['id']}_{key}.jsonl", data)
            obj["request_counts"] = {"total": len(batch["lines"]), "completed": len(out), "failed": len(err)}
            obj["usage"] = usage
            if cancelling:
                obj.update(status="cancelled", cancelled_at=now)
            else:
                obj.update(status="completed", finalizing_at=now, completed_at=now)
            batch["done"] = True

    def _store_file_locked(self, filename, data) -> str:
        obj = {"id": _id("file-"), "object": "file", "bytes": len(data), "created_at": int(time.time()),
               "filename": filename, "purpose": "batch_output", "status": "processed", "expires_at": None,
               "status_details": None}
        self.files[obj["id"]] = {"object": obj, "data": data}
        return obj["id"]


def _parse_input(data: bytes, endpoint: str) -> tuple[list[dict], list[dict]]:
    lines, errors, ids, models = [], [], set(), set()
    for n, text in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except ValueError:
            errors.append({"code": "invalid_json_line", "line": n, "message": "This line is not parseable as valid JSON."})
            continue
        if line.get("url") != endpoint or line.get("method") != "POST":
            errors.append({"code": "mismatched_endpoint", "line": n,
                           "message": f"The url provided for this request does not match the batch endpoint {endpoint}."})
        elif not isinstance(line.get("custom_id"), str) or line["custom_id"] in ids:
            errors.append({"code": "duplicate_custom_id", "line": n, "message": "custom_id must be a unique string."})
        elif not isinstance(line.get("body"), dict):
            errors.append({"code": "invalid_request", "line": n, "message": "body must be a JSON object."})
        else:
            ids.add(line["custom_id"])
            models.add(line["body"].get("model"))
            lines.append(line)
    if len(models) > 1:
        errors.append({"code": "model_mismatch", "line": None, "message": "All requests in a batch must use the same model."})
    if not lines and not errors:
        errors.append({"code": "empty_file", "line": None, "message": "The batch input file is empty."})
    return lines, errors


def _multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    if "multipart/form-data" not in content_type:
        raise _openai_error(400, "invalid_request_error", "expected a multipart/form-data upload")
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\nMIME-Version: 1.0\r\n\r\n" + raw)
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


def _anthropic_error(status, kind, message) -> Reply:
    return Reply(status, {"type": "error", "error": {"type": kind, "message": message}, "request_id": _id("req_")})


def _openai_error(status, kind, message, param=None) -> Reply:
    return Reply(status, {"error": {"message": message, "type": kind, "param": param, "code": None}})
