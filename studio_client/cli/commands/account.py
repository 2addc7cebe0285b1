"""``studio login``, ``logout`` and ``whoami``: the credential the other commands use."""

from __future__ import annotations

import os
import sys
from typing import Any

import click
from rich.console import Console

from studio_client.cli import config
from studio_client.cli.options import json_option
from studio_client.cli.state import State, pass_state
from studio_client.errors import StudioError
from studio_client.sync import StudioClient

__all__ = ["COMMANDS"]

DEFAULT_URL = "http://127.0.0.1:8000"


def _url(state: State, url: str | None) -> str:
    stored = config.load()
    return (
        url or state.url or os.environ.get("STUDIO_URL") or (stored.url if stored else DEFAULT_URL)
    )


def _password(password_stdin: bool) -> str:
    if password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise click.UsageError("--password-stdin: nothing was read from stdin")
        return line
    return os.environ.get("STUDIO_PASSWORD") or click.prompt("Password", hide_input=True)


@click.command(
    epilog="""\b
Examples:
  studio login --url http://127.0.0.1:8000 --user admin
  echo "$PASSWORD" | studio login --user admin --password-stdin
  studio login --url https://studio.example.com --api-key sk_...
"""
)
@click.option("--url", metavar="URL", help=f"The studio's address ({DEFAULT_URL}).")
@click.option("--user", "-u", metavar="NAME", help="Your user name (asked when not given).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--api-key", metavar="KEY", help="Store an API key instead of signing in.")
@json_option
@pass_state
def login(
    state: State, url: str | None, user: str | None, password_stdin: bool, api_key: str | None
) -> None:
    """Sign in and keep the session (or an API key) for the next commands.

    It is stored in $XDG_CONFIG_HOME/ai-studio/credentials.json (~/.config when unset),
    readable by you only. The password is never stored: the session refreshes itself.
    """
    url = _url(state, url)
    with StudioClient(url, api_key=api_key) as client:
        if api_key:
            me = client.auth.me()
            saved = config.Credentials(url=url, user=me.get("id"), api_key=api_key)
        else:
            user = user or click.prompt("User")
            session = client.auth.login(user, _password(password_stdin))
            saved = config.Credentials(
                url=url,
                user=user,
                access_token=session.access_token,
                refresh_token=session.refresh_token,
            )
    path = config.save(saved)
    done = {
        "url": url,
        "user": saved.user,
        "credential": "api_key" if api_key else "session",
        "path": str(path),
    }

    def human(out: Console) -> None:
        out.print(f"Signed in to {url} as [bold]{saved.user}[/bold].")
        out.print(f"Credential stored in {path} (readable by you only).", highlight=False)

    state.output.result(done, human)


@click.command(epilog="\b\nExample:\n  studio logout\n")
@json_option
@pass_state
def logout(state: State) -> None:
    """End the stored session at the studio and forget it here."""
    stored = config.load()
    ended = False
    if stored and stored.access_token:
        try:
            with StudioClient(stored.url, token=stored.access_token) as client:
                client.auth.logout()
                ended = True
        except StudioError:
            pass  # already over, or the studio is gone: forgetting it here is what matters
    forgotten = config.clear()
    done = {"url": stored.url if stored else None, "forgotten": forgotten, "ended": ended}

    def human(out: Console) -> None:
        out.print("Signed out." if forgotten else "Not signed in: nothing to forget.")

    state.output.result(done, human)


@click.command(epilog="\b\nExamples:\n  studio whoami\n  studio whoami --json\n")
@json_option
@pass_state
def whoami(state: State) -> None:
    """Who the stored credential (or STUDIO_API_KEY / STUDIO_TOKEN) says you are."""
    client = state.client()
    me: dict[str, Any] = client.auth.me()
    me["url"] = client.base_url

    def human(out: Console) -> None:
        role = me.get("site_role") or ("admin" if me.get("is_admin") else "user")
        out.print(f"{me.get('id')} at {me['url']} ({role}, signed in by {me.get('via')})")

    state.output.result(me, human)


COMMANDS = [login, logout, whoami]
