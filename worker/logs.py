"""Structured JSON logs, configured in one place. Secrets never reach a log line: settings hide
them from repr, and known key shapes are masked on the way out."""
from __future__ import annotations

import json
import logging
import re
import sys
import time

_SECRET = re.compile(r"(sk-lf-[\w-]+|pk-lf-[\w-]+|sk-ant-[\w-]+|sk-[A-Za-z0-9_-]{16,})")
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def mask(text: str) -> str:
    return _SECRET.sub(lambda m: m.group(0)[:6] + "…", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(time.time(), 3), "level": record.levelname.lower(),
                 "logger": record.name, "event": record.getMessage()}
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return mask(json.dumps(entry, default=str))


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "anthropic", "openai", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
