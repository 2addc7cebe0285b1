"""REST for API keys, the credential of scripts: create (the key is shown this once), list,
revoke. A key is the owner's alone: another user's key id is answered as unknown.

Imports fastapi, the gateway's ports, the identity contracts and read model.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from contracts import common, new_id
from contracts import identity as c
from services.gateway.auth.deps import CurrentUser
from services.gateway.auth.principal import Principal
from services.gateway.auth.routes import NO_STORE, settled
from services.gateway.envelope import ERROR_RESPONSES, REQUEST_ID, ApiError, ok
from services.gateway.gateway import DbDep, GatewayDep
from services.gateway.readmodels import identity as read
from services.kernel.sqlite import session

router = APIRouter(prefix="/auth/keys", tags=["auth"], responses=ERROR_RESPONSES)

KeyIdPath = Annotated[str, Path(pattern=c.KEY_ID_PATTERN, max_length=common.ID_MAX)]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=c.KEY_NAME_MAX)
    #: When the key stops working; none: until revoked.
    expires_at: AwareDatetime | None = None


@router.post("", status_code=201)
async def create_key(
    body: KeyCreate, principal: CurrentUser, request: Request, gateway: GatewayDep
) -> Response:
    """Create an API key for yourself; the answer holds the key, shown this once."""
    if body.expires_at is not None and body.expires_at <= datetime.now(UTC):
        raise ApiError(common.VALIDATION_ERROR, "expires_at is in the past", field="expires_at")
    command = c.IssueApiKey(
        user_id=principal.user_id,
        key_id=new_id(),
        name=body.name,
        expires_at=body.expires_at,
        actor=principal.user_id,
        correlation_id=REQUEST_ID.get(),
    )
    created = await gateway.ask(c.Subjects.ISSUE_API_KEY, command, c.ApiKeyCreated, request)
    await settled(gateway, created)
    async with session(gateway.engine) as db:
        row = await read.get_api_key(db, key_id=created.key_id)
    data: dict[str, object] = row.public() if row else {"key_id": created.key_id}
    data["key"] = created.key
    return ok(data, status=201, headers=NO_STORE)


@router.get("")
async def list_keys(principal: CurrentUser, db: DbDep) -> Response:
    """Your API keys, newest first (never the keys themselves)."""
    rows = await read.list_api_keys(db, user_id=principal.user_id)
    return ok({"items": [r.public() for r in rows], "total": len(rows)})


@router.delete("/{key_id}", status_code=204)
async def revoke_key(
    key_id: KeyIdPath, principal: CurrentUser, request: Request, gateway: GatewayDep
) -> Response:
    """Revoke one of your API keys: it stops working at once."""
    async with session(gateway.engine) as db:
        row = await read.get_api_key(db, key_id=key_id)
    if row is None or not _may_revoke(principal, row.user_id):
        raise ApiError(common.NOT_FOUND, f"API key {key_id} does not exist")
    if not row.revoked:
        command = c.RevokeApiKey(
            user_id=row.user_id,
            key_id=key_id,
            actor=principal.user_id,
            correlation_id=REQUEST_ID.get(),
        )
        await settled(gateway, await gateway.send(c.Subjects.REVOKE_API_KEY, command, request))
    return Response(status_code=204)


def _may_revoke(principal: Principal, owner: str) -> bool:
    """The owner, or a site admin (a leaked key must be stoppable by someone who can)."""
    return principal.user_id == owner or principal.is_admin
