"""What every ``studio`` command shares: the studio's address, the credential, the client.

The address is ``--url``, else ``STUDIO_URL``, else the one ``studio login`` stored. The
credential is ``STUDIO_API_KEY`` or ``STUDIO_TOKEN`` when set (scripts, CI), else the stored
one. A session the client refreshed while a command ran is written back, so the next command
starts from the fresh tokens. Projects and splits are named by id or by name. Imports click,
the client and the command's own config, errors and output modules.
"""

from __future__ import annotations

import os
import re
from typing import Any

import click

from studio_client.cli import config
from studio_client.cli.errors import AUTH, NOT_FOUND, Failure
from studio_client.cli.output import Output
from studio_client.errors import NotFound
from studio_client.models import Project, Session, Split
from studio_client.sync import StudioClient

__all__ = ["State", "pass_state"]

ID = re.compile(r"[0-9a-f]{32}")
NOT_SIGNED_IN = "not signed in to a studio"
SIGN_IN_HINT = "Sign in first: studio login --url http://127.0.0.1:8000 --user <name>"


class State:
    """One invocation's settings and its (lazily made) client."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url
        self.output = Output()
        self._client: StudioClient | None = None
        self._stored: config.Credentials | None = None

    @property
    def json(self) -> bool:
        return self.output.json

    def client(self) -> StudioClient:
        """The signed-in client; a ``Failure`` (exit 3) when there is no credential."""
        if self._client is not None:
            return self._client
        stored = config.load()
        url = self.url or os.environ.get("STUDIO_URL") or (stored.url if stored else None)
        api_key, token = os.environ.get("STUDIO_API_KEY"), os.environ.get("STUDIO_TOKEN")
        if not url or not (api_key or token or (stored and stored.signed_in)):
            raise Failure(NOT_SIGNED_IN, AUTH, hint=SIGN_IN_HINT)
        if api_key or token:
            self._client = StudioClient(url, token=token, api_key=api_key)
            return self._client
        assert stored is not None  # signed_in above
        if stored.url.rstrip("/") != url.rstrip("/"):
            raise Failure(f"{NOT_SIGNED_IN} at {url} (signed in at {stored.url})", AUTH)
        client = StudioClient(url, token=stored.access_token, api_key=stored.api_key)
        if stored.access_token:  # a session: the client refreshes it when it expires
            client.transport.session = Session(
                access_token=stored.access_token, refresh_token=stored.refresh_token
            )
        self._client, self._stored = client, stored
        return client

    def close(self) -> None:
        """Close the client; keep a session it refreshed meanwhile."""
        client, stored = self._client, self._stored
        self._client = None
        if client is None:
            return
        session = client.transport.session
        if stored and session and session.access_token != stored.access_token:
            config.save(
                config.Credentials(
                    url=stored.url,
                    user=stored.user,
                    access_token=session.access_token,
                    refresh_token=session.refresh_token or stored.refresh_token,
                )
            )
        client.close()

    # --- names to ids -------------------------------------------------------------------------

    def project(self, ref: str) -> Project:
        """The project whose id or name is ``ref``."""
        client = self.client()
        if ID.fullmatch(ref):
            try:
                return client.projects.get(ref)
            except NotFound:
                pass
        page = client.projects.list(status="all", q=ref, limit=100)
        named = [p for p in page.items if p.name == ref]
        if len(named) == 1:
            return named[0]
        if named:
            ids = ", ".join(p.id for p in named)
            raise Failure(f"{len(named)} projects are named {ref!r}: use an id ({ids})")
        raise Failure(
            f"no project {ref!r}: neither the id nor the name of a project you can see",
            NOT_FOUND,
            hint="List them: studio projects list",
        )

    def split(self, project: Project, ref: str | None) -> Split:
        """The project's split named or with id ``ref``; its newest when ``ref`` is None."""
        splits = self.client().splits.list(project.id)
        if ref is None:
            if not splits:
                raise Failure(
                    f"project {project.name!r} has no split yet",
                    NOT_FOUND,
                    hint=f"Make one: studio split {project.id} --ratios 0.7,0.15,0.15",
                )
            return max(splits, key=lambda s: s.created_at or "")
        found = [s for s in splits if ref in (s.id, s.name)]
        if len(found) == 1:
            return found[0]
        if found:
            ids = ", ".join(s.id for s in found)
            raise Failure(f"{len(found)} splits are named {ref!r}: use an id ({ids})")
        raise Failure(f"project {project.name!r} has no split {ref!r}", NOT_FOUND)


pass_state: Any = click.make_pass_decorator(State)
