"""The identity service's figures for Prometheus: sign-ins by outcome, sessions refreshed.

``locked`` is a sign-in refused because the account is disabled (an administrator locked it),
told apart from ``refused`` (a wrong password, an unknown user) here only: the answer to the
caller is the same for both. Sign-in attempts the gateway throttles (429) never reach this
service. Imports ``prometheus_client`` only.
"""

from __future__ import annotations

from typing import Final, Literal

from prometheus_client import Counter

SignInOutcome = Literal["succeeded", "refused", "locked"]
OUTCOMES: Final[tuple[SignInOutcome, ...]] = ("succeeded", "refused", "locked")

SIGN_INS = Counter("studio_sign_ins_total", "Sign-ins with a password, by outcome.", ["outcome"])
SESSIONS_REFRESHED = Counter(
    "studio_sessions_refreshed_total", "Sessions given a new refresh token."
)
for _outcome in OUTCOMES:
    SIGN_INS.labels(_outcome)


def signed_in(outcome: SignInOutcome) -> None:
    SIGN_INS.labels(outcome).inc()
