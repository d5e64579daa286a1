"""The ``judge`` section of rubric.yaml: which model judges, on which endpoint, pinned how.

Hosted providers (``anthropic``, ``openai``) use the global settings (``*_API_KEY``,
``*_BASE_URL``). A self-hosted or gateway endpoint is ``openai-compatible`` or
``anthropic-compatible`` with its own ``base_url`` and the *name* of the environment variable
holding its key (``api_key_env``; the key itself is read through Settings), and pins the
served model by ``identity`` (a weights digest, a tag or a revision) instead of a dated id.
"""
from __future__ import annotations

import dataclasses
import re
from urllib.parse import urlparse

from worker.rubrics.doc import RubricDoc

HOSTED = ("anthropic", "openai")
COMPATIBLE = ("openai-compatible", "anthropic-compatible")
IDENTITY_KINDS = ("digest", "tag", "revision")
DEFAULT_MAX_TOKENS = 1024
# OpenAI's reasoning models count their hidden reasoning in max_completion_tokens: 1,024 would
# often end `truncated` before the verdict, so their default leaves room for it.
REASONING_MAX_TOKENS = 16384
_REASONING = re.compile(r"^(?:o\d|gpt-5)")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class JudgeSpec:
    provider: str  # anthropic | openai | openai-compatible | anthropic-compatible
    model: str
    max_tokens: int = DEFAULT_MAX_TOKENS
    mode: str = "online"  # online | batch (Anthropic Message Batches / OpenAI Batch API, for work that can wait)
    base_url: str | None = None  # compatible kinds only
    api_key_env: str | None = None  # the NAME of the variable holding the key (compatible kinds)
    identity: tuple[str, str] | None = None  # (digest | tag | revision, value): the served model's fixed identity

    @property
    def protocol(self) -> str:
        """The wire protocol: anthropic or openai."""
        return self.provider.removesuffix("-compatible")

    @property
    def self_hosted(self) -> bool:
        return self.provider in COMPATIBLE

    @property
    def endpoint(self) -> str:
        """A stable name of the endpoint: the provider, or a compatible server's host/path."""
        if not self.self_hosted:
            return self.provider
        parsed = urlparse(self.base_url or "")
        return f"{self.protocol}@{parsed.netloc}{parsed.path.rstrip('/')}"


def is_reasoning_model(model: str) -> bool:
    return bool(_REASONING.match(model.rsplit("/", 1)[-1].removeprefix("ft:")))


def default_max_tokens(provider: str, model: str) -> int:
    return REASONING_MAX_TOKENS if provider == "openai" and is_reasoning_model(model) else DEFAULT_MAX_TOKENS


def parse_judge(doc: RubricDoc, raw: object) -> JudgeSpec | None:
    if not isinstance(raw, dict):
        doc.error(("judge",), "judge must be a mapping")
        return None
    ok = True
    provider = raw.get("provider")
    if provider not in HOSTED + COMPATIBLE:
        doc.error(("judge", "provider"), f"judge.provider must be one of {', '.join(HOSTED + COMPATIBLE)}")
        ok = False
    model = raw.get("model")
    if not isinstance(model, str) or not model:
        doc.error(("judge", "model"), "judge.model is required (a pinned snapshot id, or the served model's name)")
        ok = False
    max_tokens = raw.get("max_tokens", default_max_tokens(str(provider), str(model)))
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 64:
        doc.error(("judge", "max_tokens"), "judge.max_tokens must be an integer of at least 64 (reasoning comes first)")
        ok = False
    mode = raw.get("mode", "online")
    if mode not in ("online", "batch"):
        doc.error(("judge", "mode"), "judge.mode must be online or batch")
        ok = False
    base_url, key_env, identity = raw.get("base_url"), raw.get("api_key_env"), None
    if provider in COMPATIBLE:
        parsed = urlparse(base_url) if isinstance(base_url, str) else None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
            doc.error(("judge", "base_url"), f"judge.base_url is required for {provider}: the server's API root, "
                      "e.g. http://llama.internal:8080/v1")
            ok = False
        if key_env is not None and (not isinstance(key_env, str) or not _ENV_NAME.match(key_env)):
            doc.error(("judge", "api_key_env"), "judge.api_key_env must be the NAME of an environment variable "
                      "(e.g. LLAMA_API_KEY), never the key itself")
            ok = False
        if mode == "batch":
            doc.error(("judge", "mode"), "judge.mode: batch needs a hosted provider (anthropic or openai)")
            ok = False
        identity = _identity(doc, raw.get("identity"))
    else:
        for key in ("base_url", "api_key_env", "identity"):
            if key in raw:
                doc.error(("judge", key), f"judge.{key} is for openai-compatible / anthropic-compatible servers; "
                          f"{provider} uses the global {str(provider).upper()}_* settings")
                ok = False
    if not ok or not isinstance(provider, str) or not isinstance(model, str):  # (ok implies both are strings)
        return None
    return JudgeSpec(provider, model, max_tokens, mode, base_url.rstrip("/") if base_url else None, key_env, identity)


def _identity(doc: RubricDoc, raw: object) -> tuple[str, str] | None:
    if raw is None:
        return None  # reported by the pinning check, which knows about TRACEJUDGE_ALLOW_FLOATING_MODELS
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in IDENTITY_KINDS \
            or not isinstance(next(iter(raw.values())), str) or not next(iter(raw.values())).strip():
        doc.error(("judge", "identity"), "judge.identity must be exactly one of digest, tag or revision, with a "
                  "non-empty string (e.g. digest: sha256:...)")
        return None
    kind, value = next(iter(raw.items()))
    return kind, value.strip()
