"""`camexp study serve`: the study page over HTTP, each answer stored in the study folder as it is given.

FastAPI (on Starlette) with uvicorn: requests are validated by the same pydantic the configs use, and the
tests drive the app through httpx (TestClient) and a real uvicorn process. What is reachable:

- `GET /` and `GET /<file>`: files under page/ only (never key.json, study.json or anything outside page/;
  no directory listing; a path that leaves page/ is a 404);
- `GET /api/plan?participant=ID`: that participant's item order and sides (seeded by the study id and the
  participant id, so a reload or another browser gets the same) and the items already answered;
- `POST /api/answer` {participant, item, choice, ms}: validated (participant id pattern, item in the study,
  choice left / same / right, finite ms, at most MAX_BODY bytes), then stored (camexp/study/store.py) before
  the reply. A bad request gets a 4xx and one log line and never touches the stored answers.

With a token every path is under /<token>/ (a secret in the URL given to the participants), so a server
reachable from other machines cannot be filled with junk by whoever finds it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from camexp.errors import CamexpError
from camexp.report.runs import STUDY_JSON
from camexp.study.make import PAGE, balanced_sides
from camexp.study.store import DB, Row, Store
from camexp.study.tally import kind, read_key, schema_error

log = logging.getLogger("camexp.study.serve")
PARTICIPANT = r"^[A-Za-z0-9_.-]{1,40}$"  # as the page asks for it
MAX_BODY = 1024  # bytes of one answer: {"participant": 40 characters, "item", "choice", "ms"} needs ~100
MAX_MS = 24 * 3600 * 1000.0  # a day: an answer that took longer is a clock or a forged request


class AnswerIn(BaseModel):
    """One answer as the page posts it (strict: `"item": true` or `"ms": NaN` is refused, not cast)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    participant: str = Field(pattern=PARTICIPANT)
    item: int = Field(ge=0)
    choice: Literal["left", "same", "right"]
    ms: float = Field(ge=0, le=MAX_MS, allow_inf_nan=False)


@dataclass(frozen=True)
class ParticipantPlan:
    """What one participant sees: `order` the items (key numbers) in presentation order: the practice items as
    listed, the first showings and catch items shuffled together, then the repeats shuffled; `flipped[item]`
    whether its sides are swapped against key.json: one coin per image for the scored items (so a repeat stays
    swapped against its first showing, and method A is on the left for half of the first showings), one per
    catch item (the map on the left for half of them), none for practice items."""

    order: list[int]
    flipped: dict[int, bool]


def participant_plan(key: dict[str, Any], participant: str) -> ParticipantPlan:
    """The participant's plan, seeded by the study id and the participant id (sha256), so it is the same on
    every request and the tally can recompute it; each position and flip is also stored with the answer."""
    seed = int.from_bytes(hashlib.sha256(f"{key['study_id']}:{participant}".encode()).digest()[:8], "big")
    rng = np.random.default_rng(seed)
    items = key["items"]
    practice = [it["item"] for it in items if kind(it) == "practice"]
    first = [it for it in items if kind(it) == "trial" and not it["repeat"]]
    again = [it["item"] for it in items if kind(it) == "trial" and it["repeat"]]
    catch = [it for it in items if kind(it) == "catch"]
    mixed = [it["item"] for it in first + catch]
    order = practice + [mixed[i] for i in rng.permutation(len(mixed))] + [again[i] for i in rng.permutation(len(again))]
    a_left = dict(zip((it["image"] for it in first), balanced_sides(rng, len(first)), strict=True))
    flip_image = {it["image"]: a_left[it["image"]] != (it["left"] == "A") for it in first}
    map_left = balanced_sides(rng, len(catch))
    flipped = {n: False for n in practice}
    flipped |= {it["item"]: flip_image[it["image"]] for it in items if kind(it) == "trial"}
    flipped |= {it["item"]: map_left[j] != (it["left"] == "map") for j, it in enumerate(catch)}
    return ParticipantPlan(order, flipped)


def _refuse(request: Request, status: int, reason: str) -> HTTPException:
    """A 4xx with one log line naming the client, the request and the reason."""
    client = request.client.host if request.client else "?"
    log.warning("%s %s %s: %d %s", client, request.method, request.url.path, status, reason)
    return HTTPException(status, reason)


def create_app(study_dir: Path, token: str | None = None) -> FastAPI:
    """The study's web app (the store opened on start-up, closed on shut-down)."""
    if not (study_dir / STUDY_JSON).is_file():
        raise CamexpError(f"{study_dir}: not a study folder (no {STUDY_JSON}; make one with `camexp study make`)")
    key = read_key(study_dir)
    page = (study_dir / PAGE).resolve()
    if not (page / "index.html").is_file():
        raise CamexpError(f"{page}: no index.html; make the study again with `camexp study make --force`")
    store = Store(study_dir / DB, key["study_id"])
    n = len(key["items"])
    router = APIRouter()

    plan_of = functools.lru_cache(maxsize=4096)(functools.partial(participant_plan, key))

    def participant_of(request: Request, participant: str) -> str:
        if not re.fullmatch(PARTICIPANT, participant):
            raise _refuse(request, 422, "participant id: letters, digits, - _ . (1 to 40)")
        return participant

    @router.get("/api/plan")
    def plan(request: Request, participant: str = "") -> dict[str, Any]:
        who = participant_of(request, participant)
        p = plan_of(who)
        done = store.answered(who)
        return {"order": p.order, "flipped": [p.flipped[i] for i in range(n)], "answers": done}

    @router.post("/api/answer")
    async def answer(request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
            raise _refuse(request, 413, f"body over {MAX_BODY} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise _refuse(request, 413, f"body over {MAX_BODY} bytes")
        try:
            a = AnswerIn.model_validate(json.loads(body))
        except (ValueError, UnicodeDecodeError) as e:  # json's errors and pydantic's ValidationError
            reason = schema_error(e) if isinstance(e, ValidationError) else "not JSON"
            raise _refuse(request, 422, reason) from None
        if a.item >= n:
            raise _refuse(request, 422, f"item {a.item} is not in the study (0..{n - 1})")
        p = plan_of(a.participant)
        row = Row(a.participant, a.item, p.order.index(a.item), p.flipped[a.item], a.choice, a.ms)
        new = await run_in_threadpool(store.add, row)  # committed to the disk before the reply
        return {"stored": True, "new": new}

    @router.get("/{path:path}")
    def static(request: Request, path: str = "") -> FileResponse:
        target = (page / (path or "index.html")).resolve()
        if not target.is_relative_to(page) or not target.is_file():
            raise _refuse(request, 404, "not a file of the study page")
        return FileResponse(target, headers={"Cache-Control": "no-cache"})

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.include_router(router, prefix=f"/{token}" if token else "")

    @app.exception_handler(HTTPException)
    async def plain(_: Request, e: HTTPException) -> JSONResponse:
        return JSONResponse({"error": e.detail}, status_code=e.status_code)

    return app
