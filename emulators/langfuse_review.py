"""The Langfuse emulator's human-review side: annotation queues and their items, datasets and
dataset items, and the human (ANNOTATION) scores a reviewer leaves, with the real server's rules.

Read from the server source (langfuse/langfuse, web/src/pages/api/public/...):
- ``annotation-queues/index.ts`` (``createAnnotationQueueForApi``): a queue name is unique per
  project (a second POST with the same name is 400 "A queue with this name already exists.", the
  Prisma P2002 the real 4.16 answers; only a serialization conflict between two concurrent
  creates is 409 "Please retry"); every ``scoreConfigIds`` entry must be a config of the
  project (400); the list is newest first, paged (page from 1, limit 50).
- ``annotation-queues/[queueId]/items/index.ts``: an item is created on every POST, *no dedup*:
  the same trace posted twice is two items to review (200 both times). A missing queue is 404.
  The items list is newest first (createdAt desc, id desc), paged.
- Score configs (langfuse_store.Store.create_config): names are not unique, a second config of a
  name is a 200 and a second config.
- A lost answer (``configure(lost_answer_next=[...])``, see ``lost_answer_label``): the write is
  stored and then the reply is a 500, as when the server or a proxy fails after the commit.
- ``v2/datasets/index.ts``: POST upserts the dataset by name (``upsertDataset``).
- ``dataset-items/index.ts``: a missing dataset is 404; items are upserted on their id, and an
  id that belongs to another dataset is 404; without an id the server makes one.
A reviewer scoring a queue item in the UI writes a score with source ANNOTATION, the queue's
config (so the reviewer's scale is the rubric's), the reviewer's user id and the queue id, and
completes the item: ``POST /_emulator/annotations`` plays that reviewer.
"""
from __future__ import annotations

import itertools
import threading
import uuid

from emulators.http_base import Reply
from emulators.langfuse_store import PROJECT_ID, Invalid, Store, now_iso

QUEUES = "/api/public/annotation-queues"
DATASETS = "/api/public/v2/datasets"
DATASET_ITEMS = "/api/public/dataset-items"


class ReviewState:
    def __init__(self):
        self.lock = threading.RLock()
        self.queues: dict[str, dict] = {}
        self.items: dict[str, dict] = {}
        self.datasets: dict[str, dict] = {}  # by name
        self.dataset_items: dict[str, dict] = {}
        self._order = itertools.count()


def state(store: Store) -> ReviewState:
    """The review data of one store (a reset emulator gets a fresh store, so fresh review data)."""
    with store.lock:
        if not hasattr(store, "review"):
            store.review = ReviewState()
        return store.review


def handles(path: str) -> bool:
    return path.startswith((QUEUES, DATASETS, DATASET_ITEMS))


def route(store: Store, method: str, path: str, q: dict, body):
    st = state(store)
    parts = path.split("/")[3:]  # after /api/public
    if path.startswith(QUEUES):
        return _queues(store, st, method, parts[1:], q, body)
    if path.startswith(DATASETS):
        return _datasets(st, method, parts[2:], q, body)
    return _dataset_items(st, method, parts[1:], q, body)


def lost_answer_label(method: str, path: str) -> str:
    """How ``lost_answer_next`` names a write: the method and the path after /api/public/ with
    its ids left out, e.g. "POST annotation-queues", "POST annotation-queues/items",
    "POST score-configs", "POST v2/datasets", "POST dataset-items", "POST scores"."""
    parts = path.split("/api/public/", 1)[-1].split("/")
    if parts[0] == "annotation-queues" and len(parts) > 1:
        parts = [parts[0], *parts[2:]]  # the queue id
    elif parts[0] in ("score-configs", "dataset-items") and len(parts) > 1:
        parts = [parts[0], "{id}"]
    return f"{method} {'/'.join(parts)}"


def _page(rows: list[dict], q: dict) -> dict:
    page, limit = int(q.get("page") or 1), int(q.get("limit") or 50)
    if page < 1 or not 1 <= limit <= 100:
        raise Invalid("page starts at 1; limit is 1..100")
    rows = sorted(rows, key=lambda r: (r["createdAt"], r["_order"]), reverse=True)
    chunk = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows[(page - 1) * limit: page * limit]]
    return {"data": chunk, "meta": {"page": page, "limit": limit, "totalItems": len(rows),
                                    "totalPages": (len(rows) + limit - 1) // limit}}


def _public(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("_")}


# -- annotation queues -----------------------------------------------------------------------

def _queues(store: Store, st: ReviewState, method: str, rest: list[str], q: dict, body):
    with st.lock:
        if not rest:
            if method == "GET":
                return 200, _page(list(st.queues.values()), q)
            return 200, _create_queue(store, st, body or {})
        queue = st.queues.get(rest[0])
        if queue is None:
            raise Reply(404, {"message": "Annotation queue not found"})
        if len(rest) == 1:
            return 200, _public(queue)
        if rest[1] != "items":
            raise Reply(404, {"message": f"{method} {'/'.join(rest)} is not emulated"})
        if len(rest) == 2:
            if method == "GET":
                rows = [i for i in st.items.values() if i["queueId"] == queue["id"]
                        and (not q.get("status") or i["status"] == q["status"])]
                return 200, _page(rows, q)
            return 200, _create_item(st, queue, body or {})
        item = st.items.get(rest[2])
        if item is None or item["queueId"] != queue["id"]:
            raise Reply(404, {"message": "Annotation queue item not found"})
        if method == "DELETE":
            del st.items[item["id"]]
            return 200, {"success": True, "message": "Item removed from queue"}
        if method == "PATCH" and (body or {}).get("status"):
            _set_status(item, body["status"])
        return 200, _public(item)


def _create_queue(store: Store, st: ReviewState, body: dict) -> dict:
    if any(queue["name"] == body["name"] for queue in st.queues.values()):
        raise Invalid("A queue with this name already exists.")  # 400, as the real 4.16 answers
    with store.lock:
        known = set(store.configs)
    if any(config_id not in known for config_id in body["scoreConfigIds"]):
        raise Invalid("At least one of the score config IDs cannot be found for the given project.")
    stamp = now_iso()
    queue = {"id": str(uuid.uuid4()), "name": body["name"], "description": body.get("description"),
             "scoreConfigIds": list(body["scoreConfigIds"]), "createdAt": stamp, "updatedAt": stamp,
             "_order": next(st._order)}
    st.queues[queue["id"]] = queue
    return _public(queue)


def _create_item(st: ReviewState, queue: dict, body: dict) -> dict:
    stamp = now_iso()
    item = {"id": str(uuid.uuid4()), "queueId": queue["id"], "objectId": body["objectId"],
            "objectType": body["objectType"], "status": "PENDING", "completedAt": None,
            "createdAt": stamp, "updatedAt": stamp, "_order": next(st._order)}
    _set_status(item, body.get("status") or "PENDING")
    st.items[item["id"]] = item
    return _public(item)


def _set_status(item: dict, status: str) -> None:
    item["status"] = status
    item["completedAt"] = now_iso() if status == "COMPLETED" else None
    item["updatedAt"] = now_iso()


# -- datasets ----------------------------------------------------------------------------------

def _datasets(st: ReviewState, method: str, rest: list[str], q: dict, body):
    with st.lock:
        if rest:
            dataset = st.datasets.get(rest[0])
            if dataset is None:
                raise Reply(404, {"message": "Dataset not found"})
            return 200, _public(dataset)
        if method == "GET":
            return 200, _page(list(st.datasets.values()), q)
        body = body or {}
        stamp = now_iso()
        dataset = st.datasets.get(body["name"])
        if dataset is None:  # upsertDataset: one dataset per name, created once
            dataset = {"id": str(uuid.uuid4()), "name": body["name"], "projectId": PROJECT_ID, "createdAt": stamp,
                       "_order": next(st._order)}
            st.datasets[body["name"]] = dataset
        for key in ("description", "metadata", "inputSchema", "expectedOutputSchema"):
            if body.get(key) is not None or key not in dataset:
                dataset[key] = body.get(key)
        dataset["updatedAt"] = stamp
        return 200, _public(dataset)


def _dataset_items(st: ReviewState, method: str, rest: list[str], q: dict, body):
    with st.lock:
        if rest:
            item = st.dataset_items.get(rest[0])
            if item is None:
                raise Reply(404, {"message": "Dataset item not found"})
            if method == "DELETE":
                del st.dataset_items[rest[0]]
                return 200, {"message": "Dataset item deleted"}
            return 200, _public(item)
        if method == "GET":
            if q.get("datasetName") and q["datasetName"] not in st.datasets:
                raise Reply(404, {"message": "Dataset not found"})
            rows = [i for i in st.dataset_items.values()
                    if all(not q.get(k) or i[k] == q[k] for k in ("datasetName", "sourceTraceId",
                                                                  "sourceObservationId"))]
            return 200, _page(rows, q)
        return 200, _upsert_item(st, body or {})


def _upsert_item(st: ReviewState, body: dict) -> dict:
    dataset = st.datasets.get(body["datasetName"])
    if dataset is None:
        raise Reply(404, {"message": "Dataset not found"})
    item_id = body.get("id") or str(uuid.uuid4())
    existing = st.dataset_items.get(item_id)
    if existing is not None and existing["datasetId"] != dataset["id"]:
        raise Reply(404, {"message": f"The dataset item with id {item_id} already exists in a dataset other than "
                                     f"{dataset['name']}"})
    stamp = now_iso()
    item = existing or {"id": item_id, "datasetId": dataset["id"], "datasetName": dataset["name"], "status": "ACTIVE",
                        "input": None, "expectedOutput": None, "metadata": None, "sourceTraceId": None,
                        "sourceObservationId": None, "mediaReferences": [], "createdAt": stamp,
                        "_order": next(st._order), "_writes": 0}
    for key in ("input", "expectedOutput", "metadata", "sourceTraceId", "sourceObservationId", "status"):
        if body.get(key) is not None:  # the server's upsert: a null leaves the stored value
            item[key] = body[key]
    item["updatedAt"] = stamp
    item["_writes"] += 1
    st.dataset_items[item_id] = item
    return _public(item)


# -- scores: the annotation field group, and a reviewer's score --------------------------------

def with_annotation_fields(store: Store, q: dict, page: dict) -> dict:
    """GET /api/public/v3/scores with ``fields=...annotation``: authorUserId and queueId."""
    if "annotation" not in (q.get("fields") or "").split(","):
        return page
    with store.lock:
        for row in page["data"]:
            stored = store.scores.get(row["id"], {})
            row["authorUserId"] = stored.get("authorUserId")
            row["queueId"] = stored.get("queueId")
    return page


def annotate(store: Store, body: dict) -> dict:
    """What a reviewer's click in the UI does: an ANNOTATION score on the trace under the queue's
    config of that name (or the project's active config of that name), and the queue's items
    of the trace completed. A new score each time unless ``id`` is given (an edit)."""
    st = state(store)
    if not isinstance(body, dict) or not body.get("traceId") or not body.get("name") or "value" not in body:
        raise Invalid("an annotation needs traceId, name and value")
    queue_id = body.get("queueId")
    with st.lock:
        queue = st.queues.get(queue_id) if queue_id else None
        if queue_id and queue is None:
            raise Reply(404, {"message": "Annotation queue not found"})
    with store.lock:
        candidates = [c for c in store.configs.values() if c["name"] == body["name"] and not c["isArchived"]
                      and (queue is None or c["id"] in queue["scoreConfigIds"])]
    if not candidates:
        raise Invalid(f"no active score config named {body['name']!r}" + (" on that queue" if queue else ""))
    config = candidates[-1]
    value = body["value"]
    if config["dataType"] == "BOOLEAN" and isinstance(value, bool):
        value = 1 if value else 0
    score = {"id": body.get("id") or str(uuid.uuid4()), "traceId": body["traceId"], "name": body["name"],
             "value": value, "source": "ANNOTATION", "configId": config["id"], "dataType": config["dataType"],
             "comment": body.get("comment"), "environment": body.get("environment") or "default"}
    if body.get("timestamp"):
        score["timestamp"] = body["timestamp"]
    score_id = store.upsert_score(score)
    with store.lock:
        store.scores[score_id]["authorUserId"] = body.get("authorUserId")
        store.scores[score_id]["queueId"] = queue_id
    with st.lock:
        for item in st.items.values():
            if item["objectId"] == body["traceId"] and (queue is None or item["queueId"] == queue["id"]):
                _set_status(item, "COMPLETED")
    return dict(store.scores[score_id])


def snapshot(store: Store) -> dict:
    """Every queue with its items, every dataset with its items (and how often each was written)."""
    st = state(store)
    with st.lock:
        return {"queues": [_public(q) | {"items": [_public(i) for i in st.items.values() if i["queueId"] == q["id"]]}
                           for q in st.queues.values()],
                "datasets": [_public(d) | {"items": [_public(i) | {"writes": i["_writes"]}
                                                     for i in st.dataset_items.values() if i["datasetId"] == d["id"]]}
                             for d in st.datasets.values()]}
