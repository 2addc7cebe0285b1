"""The baseline of the gateway figures: a bare FastAPI app on the same uvicorn settings.

    python -m bench.bare_app PORT NATS_URL BODY_FILE

``GET /api/v1/projects/{id}`` and ``GET /api/v1/datasets/{id}/images`` return the JSON bytes the
gateway answered for them (read from ``BODY_FILE``, a JSON object path -> body), with no lookup;
``POST /api/v1/projects`` validates the same body as the gateway and does one JetStream publish
to a file stream of the same (fsyncing) server, then answers 201. Imports FastAPI, pydantic,
uvicorn and nats-py only.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import nats
import uvicorn
from fastapi import FastAPI, Request, Response
from nats.js.api import StreamConfig
from pydantic import BaseModel, ConfigDict, Field

STREAM, SUBJECT = "BENCH_BARE", "bench.bare"


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=2000)
    task_type: Literal["classification", "detection"] = "classification"


def create_app(nats_url: str, bodies: dict[str, str]) -> FastAPI:
    state: dict[str, object] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name=STREAM, subjects=[f"{SUBJECT}.>"]))
        state["js"] = js
        yield
        await nc.close()

    app = FastAPI(lifespan=lifespan)
    project, images = bodies["project"].encode(), bodies["images"].encode()

    @app.get("/api/v1/projects/{project_id}")
    async def get_project(project_id: str) -> Response:
        return Response(project, media_type="application/json")

    @app.get("/api/v1/datasets/{project_id}/images")
    async def list_images(project_id: str) -> Response:
        return Response(images, media_type="application/json")

    @app.post("/api/v1/projects", status_code=201)
    async def create(body: ProjectCreate, request: Request) -> dict[str, object]:
        pid = uuid.uuid4().hex
        js = state["js"]
        ack = await js.publish(f"{SUBJECT}.{pid}", body.model_dump_json().encode(),  # type: ignore[attr-defined]
                               headers={"Nats-Msg-Id": pid})  # fmt: skip
        return {"status": "ok", "data": {"id": pid, **body.model_dump(), "seq": ack.seq}}

    return app


def main() -> None:
    port, url, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    with open(path) as file:
        bodies = json.load(file)
    uvicorn.run(create_app(url, bodies), host="127.0.0.1", port=port, log_level="warning",
                proxy_headers=True, access_log=False, log_config=None)  # fmt: skip


if __name__ == "__main__":
    main()
