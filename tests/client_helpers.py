"""The Python client (``studio_client``) of a test studio, signed in as its first admin: what
the client's integration tests start from. Imports the client and the stack helpers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from studio_client import StudioClient
from tests.stack import ADMIN, ADMIN_PASSWORD, Stack


@contextmanager
def signed_in(stack: Stack, timeout: float = 30.0) -> Iterator[StudioClient]:
    """A blocking client of ``stack`` signed in as its first admin, once the identity service
    has made that admin; ``timeout`` for each of its requests."""
    stack.token()  # waits until the identity service has made the first admin
    with StudioClient(stack.base_url, timeout=timeout) as client:
        client.auth.login(ADMIN, ADMIN_PASSWORD)
        yield client
