"""The User decider, given past events, when a command (with the facts its handler established),
then new events or a refusal.

Pure: no hashing, no clock, no store. The handler verifies passwords and draws secrets; here a
fact such as ``password_ok`` is simply given.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from contracts import common
from contracts import identity as c
from services.identity import domain
from services.identity.domain import (
    ApiKey,
    ApiKeyAlreadyExists,
    ApiKeyNotFound,
    InvalidApiKey,
    InvalidCredentials,
    Session,
    SessionAlreadyStarted,
    State,
    TooManyApiKeys,
    UserAlreadyExists,
    UserIsDisabled,
    UserNotFound,
    WrongCurrentPassword,
    evolve,
    fold,
)
from services.kernel.domain import DomainError
from tests.scenario import Decider

USER: Decider[State, domain.Plain, c.Event] = Decider(
    evolve=evolve, initial=None, decide=domain.decide
)
given = USER.given
Action = Callable[[State], list[c.Event]]

U, S1, S2, K = "ada", "s-1", "s-2", "k-1"
SEAL, NEW_SEAL = b"sealed-hash", b"new-sealed-hash"
T0 = datetime(2030, 1, 1, tzinfo=UTC)
LATER = T0 + timedelta(days=14)
CREATED = c.UserCreated(
    user_id=U, site_role="user", tier="free", password_seal=SEAL, causation_id="m-1"
)
STARTED = c.SessionStarted(
    user_id=U, session_id=S1, refresh_hash="h1", expires_at=LATER, occurred_at=T0
)
DISABLED = c.UserDisabled(user_id=U, occurred_at=T0)
ISSUED = c.ApiKeyIssued(user_id=U, key_id=K, name="ci", key_hash="kh", occurred_at=T0)


# --- create ---------------------------------------------------------------------------------


def create(**fields: object) -> c.CreateUser:
    return c.CreateUser(user_id=U, password="correct horse", **fields)  # type: ignore[arg-type]


def test_create_a_user_stores_the_seal_never_the_password() -> None:
    scenario = given().when(lambda s: domain.create_user(s, create(), seal=SEAL))
    scenario.then(c.UserCreated(user_id=U, site_role="user", tier="free", password_seal=SEAL))
    assert "correct horse" not in repr(scenario.decided())


def test_create_an_admin_of_a_tier() -> None:
    command = create(site_role="admin", tier="premium")
    given().when(lambda s: domain.create_user(s, command, seal=SEAL)).then(
        c.UserCreated(user_id=U, site_role="admin", tier="premium", password_seal=SEAL)
    )


def test_a_taken_user_id_is_refused() -> None:
    given(CREATED).when(
        lambda s: domain.create_user(s, create(message_id="m-2"), seal=SEAL)
    ).then_refused(UserAlreadyExists, field="user_id")


def test_the_same_create_retried_decides_nothing() -> None:
    given(CREATED).when(lambda s: domain.create_user(s, create(message_id="m-1"), seal=SEAL)).then()


# --- disable and enable -----------------------------------------------------------------------


def test_disable_a_user_ends_its_sessions() -> None:
    after = given(CREATED, STARTED).when(c.DisableUser(user_id=U)).after()
    assert after is not None and after.disabled and not after.sessions


def test_disable_twice_or_enable_an_enabled_user_decides_nothing() -> None:
    given(CREATED, DISABLED).when(c.DisableUser(user_id=U)).then()
    given(CREATED).when(c.EnableUser(user_id=U)).then()


def test_enable_a_disabled_user() -> None:
    given(CREATED, DISABLED).when(c.EnableUser(user_id=U)).then(c.UserEnabled(user_id=U))


@pytest.mark.parametrize(
    "command",
    [
        c.DisableUser(user_id=U),
        c.EnableUser(user_id=U),
        c.EndSession(user_id=U, session_id=S1),
        c.RevokeApiKey(user_id=U, key_id=K),
    ],
)
def test_commands_on_an_unknown_user_are_refused(command: domain.Plain) -> None:
    given().when(command).then_refused(UserNotFound, field="user_id")


# --- password change ---------------------------------------------------------------------------


def change(current: str | None = "correct horse") -> c.ChangePassword:
    return c.ChangePassword(user_id=U, new_password="battery staple", current_password=current)


def test_change_password_with_the_current_one_revokes_every_session() -> None:
    scenario = given(CREATED, STARTED).when(
        lambda s: domain.change_password(s, change(), current_ok=True, seal=NEW_SEAL)
    )
    scenario.then(c.PasswordChanged(user_id=U, password_seal=NEW_SEAL))
    after = scenario.after()
    assert after is not None and after.password_seal == NEW_SEAL and not after.sessions


def test_change_password_with_a_wrong_current_one_is_refused() -> None:
    given(CREATED).when(
        lambda s: domain.change_password(s, change(), current_ok=False, seal=NEW_SEAL)
    ).then_refused(WrongCurrentPassword, field="current_password")


def test_an_admin_reset_needs_no_current_password() -> None:
    given(CREATED).when(
        lambda s: domain.change_password(s, change(None), current_ok=False, seal=NEW_SEAL)
    ).then(c.PasswordChanged(user_id=U, password_seal=NEW_SEAL))


def test_change_password_of_an_unknown_user_is_refused() -> None:
    given().when(
        lambda s: domain.change_password(s, change(None), current_ok=False, seal=NEW_SEAL)
    ).then_refused(UserNotFound, field="user_id")


# --- login ------------------------------------------------------------------------------------


def login(session_id: str = S2, *, ok: bool = True) -> Action:
    command = c.Login(user_id=U, password="correct horse", session_id=session_id)
    return lambda s: domain.login(s, command, password_ok=ok, refresh_hash="h2", expires_at=LATER)


def test_login_starts_a_session_with_the_refresh_token_hash() -> None:
    given(CREATED).when(login()).then(
        c.SessionStarted(user_id=U, session_id=S2, refresh_hash="h2", expires_at=LATER)
    )


@pytest.mark.parametrize(
    ("history", "ok"),
    [((CREATED,), False), ((), True), ((), False), ((CREATED, DISABLED), True)],
    ids=["wrong password", "unknown user", "unknown user, any password", "disabled user"],
)
def test_every_failed_login_is_the_same_refusal(history: tuple[c.Event, ...], ok: bool) -> None:
    error = given(*history).when(login(ok=ok)).then_refused(InvalidCredentials)
    assert (error.code, error.message) == ("INVALID_CREDENTIALS", "wrong username or password")


def test_a_session_id_used_before_is_refused() -> None:
    given(CREATED, STARTED).when(login(S1)).then_refused(SessionAlreadyStarted)


def test_a_user_enabled_again_can_login() -> None:
    enabled = c.UserEnabled(user_id=U)
    given(CREATED, DISABLED, enabled).when(login()).then(
        c.SessionStarted(user_id=U, session_id=S2, refresh_hash="h2", expires_at=LATER)
    )


# --- refresh ----------------------------------------------------------------------------------


def refresh(presented: str = "h1", now: datetime = T0, session_id: str = S1) -> Action:
    command = c.RefreshSession(user_id=U, session_id=session_id, refresh_token="the token")
    return lambda s: domain.refresh_session(
        s,
        command,
        presented_hash=presented,
        new_hash="h3",
        now=now,
        expires_at=LATER + timedelta(1),
    )


def test_refresh_rotates_the_token() -> None:
    scenario = given(CREATED, STARTED).when(refresh())
    scenario.then(
        c.SessionRefreshed(
            user_id=U, session_id=S1, refresh_hash="h3", expires_at=LATER + timedelta(1)
        )
    )
    after = scenario.after()
    assert after is not None and after.sessions[S1].refresh_hash == "h3"


def test_a_rotated_out_token_that_comes_back_ends_the_session() -> None:
    rotated = c.SessionRefreshed(
        user_id=U, session_id=S1, refresh_hash="h3", expires_at=LATER, occurred_at=T0
    )
    scenario = given(CREATED, STARTED, rotated).when(refresh("h1"))
    scenario.then(c.SessionEnded(user_id=U, session_id=S1, reason="refresh_token_reused"))
    after = scenario.after()
    assert after is not None and S1 not in after.sessions  # the current token is dead too


def test_a_session_remembers_its_latest_rotated_tokens_only() -> None:
    refreshes = [
        c.SessionRefreshed(
            user_id=U, session_id=S1, refresh_hash=f"r{i}", expires_at=LATER, occurred_at=T0
        )
        for i in range(domain.ROTATED_KEPT + 5)
    ]
    user = fold([CREATED, STARTED, *refreshes])
    assert user is not None
    session = user.sessions[S1]
    assert session.refresh_hash == f"r{domain.ROTATED_KEPT + 4}"
    assert len(session.rotated) == domain.ROTATED_KEPT and "h1" not in session.rotated
    assert session.rotated[-1] == f"r{domain.ROTATED_KEPT + 3}"


@pytest.mark.parametrize(
    ("history", "attempt"),
    [
        ((CREATED, STARTED), refresh("wrong")),
        ((CREATED, STARTED), refresh(now=LATER)),
        ((CREATED, STARTED), refresh(session_id="s-9")),
        ((CREATED, STARTED, c.SessionEnded(user_id=U, session_id=S1)), refresh()),
        ((CREATED, STARTED, c.PasswordChanged(user_id=U, password_seal=NEW_SEAL)), refresh()),
        ((CREATED, STARTED, DISABLED), refresh()),
        ((), refresh()),
    ],
    ids=[
        "wrong token",
        "expired",
        "unknown session",
        "ended",
        "password changed",
        "disabled",
        "no user",
    ],
)
def test_refresh_refusals_all_say_invalid_credentials(
    history: tuple[c.Event, ...], attempt: Action
) -> None:
    given(*history).when(attempt).then_refused(InvalidCredentials)


# --- end session ------------------------------------------------------------------------------


def test_end_a_session() -> None:
    given(CREATED, STARTED).when(c.EndSession(user_id=U, session_id=S1)).then(
        c.SessionEnded(user_id=U, session_id=S1)
    )


def test_ending_an_ended_or_unknown_session_decides_nothing() -> None:
    ended = c.SessionEnded(user_id=U, session_id=S1)
    given(CREATED, STARTED, ended).when(c.EndSession(user_id=U, session_id=S1)).then()
    given(CREATED).when(c.EndSession(user_id=U, session_id="s-9")).then()


def test_expired_sessions_are_dropped_from_the_state_as_time_passes() -> None:
    later_event = c.UserEnabled(user_id=U, occurred_at=LATER + timedelta(seconds=1))
    assert fold([CREATED, STARTED]).sessions == {S1: Session("h1", LATER)}  # type: ignore[union-attr]
    assert fold([CREATED, STARTED, later_event]).sessions == {}  # type: ignore[union-attr]


# --- API keys ---------------------------------------------------------------------------------


def issue(
    key_id: str = "k-2", name: str = "notebook", expires_at: datetime | None = None
) -> Action:
    command = c.IssueApiKey(user_id=U, key_id=key_id, name=name, expires_at=expires_at)
    return lambda s: domain.issue_api_key(s, command, key_hash="kh2", now=T0)


def test_issue_an_api_key_stores_its_hash() -> None:
    given(CREATED).when(issue(expires_at=LATER)).then(
        c.ApiKeyIssued(user_id=U, key_id="k-2", name="notebook", key_hash="kh2", expires_at=LATER)
    )


def test_issue_trims_the_name() -> None:
    given(CREATED).when(issue(name="  ci  ")).then(
        c.ApiKeyIssued(user_id=U, key_id="k-2", name="ci", key_hash="kh2")
    )


@pytest.mark.parametrize(
    ("history", "attempt", "error", "field"),
    [
        ((), issue(), UserNotFound, "user_id"),
        ((CREATED, DISABLED), issue(), UserIsDisabled, None),
        ((CREATED, ISSUED), issue(K), ApiKeyAlreadyExists, "key_id"),
        ((CREATED,), issue(name="   "), InvalidApiKey, "name"),
        ((CREATED,), issue(expires_at=T0), InvalidApiKey, "expires_at"),
        ((CREATED,), issue(expires_at=datetime(2040, 1, 1)), InvalidApiKey, "expires_at"),
    ],
    ids=["unknown user", "disabled", "key id taken", "blank name", "already expired", "naive"],
)
def test_issue_refusals(
    history: tuple[c.Event, ...], attempt: Action, error: type[DomainError], field: str | None
) -> None:
    given(*history).when(attempt).then_refused(error, field=field)


def test_a_user_holds_at_most_max_api_keys_but_revoked_and_expired_ones_do_not_count() -> None:
    keys = [
        c.ApiKeyIssued(user_id=U, key_id=f"k{i}", name="n", key_hash="h", occurred_at=T0)
        for i in range(domain.MAX_API_KEYS)
    ]
    given(CREATED, *keys).when(issue()).then_refused(TooManyApiKeys)
    revoked = c.ApiKeyRevoked(user_id=U, key_id="k0", occurred_at=T0)
    assert given(CREATED, *keys, revoked).when(issue()).decided()
    expired = c.ApiKeyIssued(user_id=U, key_id="k0", name="n", key_hash="h", expires_at=T0)
    assert given(CREATED, expired, *keys[1:]).when(issue()).decided()


def test_revoke_an_api_key_and_its_id_is_never_reused() -> None:
    revoked = c.ApiKeyRevoked(user_id=U, key_id=K)
    given(CREATED, ISSUED).when(c.RevokeApiKey(user_id=U, key_id=K)).then(revoked)
    state = fold([CREATED, ISSUED, revoked])
    assert state is not None and state.api_keys[K] == ApiKey("ci", None, revoked=True)
    given(CREATED, ISSUED, revoked).when(issue(K)).then_refused(ApiKeyAlreadyExists, field="key_id")


def test_revoke_twice_decides_nothing_and_an_unknown_key_is_refused() -> None:
    revoked = c.ApiKeyRevoked(user_id=U, key_id=K)
    given(CREATED, ISSUED, revoked).when(c.RevokeApiKey(user_id=U, key_id=K)).then()
    given(CREATED).when(c.RevokeApiKey(user_id=U, key_id=K)).then_refused(
        ApiKeyNotFound, field="key_id"
    )


# --- evolve, decide and codes -------------------------------------------------------------------


def test_an_event_for_an_unknown_user_cannot_be_replayed() -> None:
    with pytest.raises(UserNotFound):
        evolve(None, DISABLED)


def test_decide_rejects_what_it_does_not_decide_alone() -> None:
    with pytest.raises(TypeError):
        domain.decide(None, create())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidCredentials, "INVALID_CREDENTIALS"),
        (UserNotFound, common.NOT_FOUND),
        (UserAlreadyExists, common.CONFLICT),
        (UserIsDisabled, common.CONFLICT),
        (SessionAlreadyStarted, common.CONFLICT),
        (WrongCurrentPassword, common.VALIDATION_ERROR),
        (InvalidApiKey, common.VALIDATION_ERROR),
        (ApiKeyAlreadyExists, common.CONFLICT),
        (TooManyApiKeys, common.CONFLICT),
        (ApiKeyNotFound, common.NOT_FOUND),
    ],
)
def test_each_refusal_answers_its_contract_code(error: type[DomainError], code: str) -> None:
    assert error.code == code
