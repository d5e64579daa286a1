"""Links into the Langfuse UI for alerts and the report."""
from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from worker.langfuse_io.client import NO_SDK_RETRIES, build_langfuse_api
from worker.retrying import call_with_retries
from worker.settings import Settings


def trace_linker(settings: Settings) -> Callable[[str], str]:
    """Links into the Langfuse trace UI: {ui}/project/{project id}/traces/{trace id}.

    Trace ids are client-supplied: each is percent-encoded, so an id cannot change the link."""
    base = (settings.langfuse_ui_url or settings.langfuse_base_url).rstrip("/")
    try:
        projects = call_with_retries(lambda: build_langfuse_api(settings).projects.get(request_options=NO_SDK_RETRIES))
        project = projects.data[0].id
    except Exception:  # boundary: a link without the project still opens in Langfuse's search
        return lambda trace_id: f"{base}/trace/{quote(trace_id, safe='')}"
    return lambda trace_id: f"{base}/project/{quote(project, safe='')}/traces/{quote(trace_id, safe='')}"
