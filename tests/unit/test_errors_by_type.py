"""Errors are caught by type where they can be handled: a transient NATS failure is retried or
said to be UNAVAILABLE (or, for a training, an interruption), never taken for "not found" or a
job's own failure; a "not found" means only that; anything else (a bug) is raised."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import BucketNotFoundError, NotFoundError

from contracts import common
from contracts import exports as x
from contracts import training as c
from services.exporter import handlers
from services.gateway import idempotency
from services.gateway.gateway import Gateway
from services.kernel.jobs.runner import Job, JobRunner
from services.kernel.memstore import InMemoryEventStore
from services.kernel.repository import Repository
from services.trainer import checkpoints, evaluations
from services.trainer.checkpoints import CheckpointFiles
from services.trainer.domain import evaluation
from services.trainer.evaluations import Evaluations
from services.trainer.runstore import RunStore
from tests.unit.exporter.test_export_handlers import FakeEngine, FakeObjects, run_job, runner


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("services.kernel.transient.FIRST_DELAY_S", 0.001)


class Calls:
    """Answers each call with the next of ``outcomes``: an exception is raised, else returned."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes, self.count = list(outcomes), 0
        self.args: tuple[Any, ...] = ()

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.count, self.args = self.count + 1, args
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


# --- the idempotency bucket ------------------------------------------------------------------


async def test_a_timeout_opening_the_bucket_is_retried_and_creates_nothing():
    js = SimpleNamespace(
        key_value=Calls(NatsTimeoutError(), NatsTimeoutError(), "bucket"), create_key_value=Calls()
    )
    assert await idempotency.open_store(js, retry_for=5) == "bucket"  # type: ignore[arg-type]
    assert js.key_value.count == 3 and js.create_key_value.count == 0


async def test_a_bucket_not_found_is_created_riding_out_a_timeout():
    js = SimpleNamespace(
        key_value=Calls(BucketNotFoundError()),
        create_key_value=Calls(NatsTimeoutError(), "created"),
    )
    assert await idempotency.open_store(js, retry_for=5) == "created"  # type: ignore[arg-type]


@pytest.mark.parametrize("error", [NatsTimeoutError(), RuntimeError("a bug")])
async def test_an_outage_past_the_retries_or_a_bug_is_raised_and_creates_nothing(
    error: Exception,
):
    js = SimpleNamespace(key_value=Calls(*[error] * 50), create_key_value=Calls())
    with pytest.raises(type(error)):
        await idempotency.open_store(js, retry_for=0.01)  # type: ignore[arg-type]
    assert js.create_key_value.count == 0


# --- the gateway's fresh read ----------------------------------------------------------------


def gateway(last: Any) -> Any:
    """Just what ``Gateway.fresh`` uses: the last message read, and the read model's wait."""
    return SimpleNamespace(
        js=SimpleNamespace(get_last_msg=Calls(last)), runner=SimpleNamespace(wait_for=Calls(True))
    )


async def test_fresh_waits_for_the_read_model_to_reach_the_last_event():
    gw = gateway(SimpleNamespace(seq=7))
    await Gateway.fresh(gw, "projects", "projects.p1")
    assert gw.runner.wait_for.count == 1


@pytest.mark.parametrize("error", [NotFoundError(), NatsTimeoutError()])
async def test_fresh_answers_from_the_read_model_without_an_event_or_without_nats(
    error: Exception, caplog: pytest.LogCaptureFixture
):
    gw = gateway(error)
    with caplog.at_level(logging.WARNING):
        await Gateway.fresh(gw, "projects", "projects.p1")
    assert gw.runner.wait_for.count == 0
    # an outage is worth a line in the log, an aggregate with no event yet is not
    assert bool(caplog.records) == isinstance(error, NatsTimeoutError)


async def test_fresh_does_not_hide_a_bug():
    with pytest.raises(RuntimeError):
        await Gateway.fresh(gateway(RuntimeError("a bug")), "projects", "projects.p1")


# --- background jobs past their retries ------------------------------------------------------


async def test_an_export_that_cannot_reach_nats_fails_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("services.exporter.jobs.artifacts.fetch", Calls(NatsTimeoutError()))
    events = await run_job(runner(tmp_path, FakeObjects(), FakeEngine()))
    assert isinstance(events[-1], x.ExportFailed) and events[-1].code == common.UNAVAILABLE


async def test_an_evaluation_that_cannot_reach_nats_fails_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(checkpoints, "fetch", Calls(NatsTimeoutError()))
    E, R = "e" * 32, "r" * 32
    repo = Repository(
        InMemoryEventStore(stream=c.STREAM, subject=c.event_subject, event_type=c.Event),
        evaluation.evolve,
        None,
    )
    started = c.EvaluationStarted(
        evaluation_id=E, run_id=R, checkpoint="best", subset="val", images=1,
        checkpoint_epoch=1, instance="host-1",
    )  # fmt: skip
    await repo.store.append(E, [started], 0)
    fake = SimpleNamespace(files=CheckpointFiles(None, tmp_path))  # type: ignore[arg-type]
    record = c.CheckpointSaved(
        run_id=R, epoch=1, kind="best", sha256="0" * 64, size=1, object_name="runs/r/x.pt"
    )
    work = partial(Evaluations._evaluate, fake, E, R, record, [])  # type: ignore[arg-type]
    jobs = JobRunner(repo, evaluations.OUTCOMES, instance="host-1")
    await jobs.start(Job(E, R, work))
    failed = (await repo.store.load(E))[-1].event
    assert isinstance(failed, c.EvaluationFailed) and failed.code == common.UNAVAILABLE


async def test_a_training_that_cannot_reach_nats_is_interrupted_not_failed():
    stored: list[tuple[str, str]] = []

    async def interrupt(run_id: str, reason: str) -> None:
        stored.append(("interrupt", reason))

    fake = SimpleNamespace(interrupt=interrupt, finish=Calls())
    await RunStore.fail(fake, "r", NatsTimeoutError())  # type: ignore[arg-type]
    assert stored == [("interrupt", "NATS was unreachable (TimeoutError)")]
    assert fake.finish.count == 0


# --- the exporter's query endpoint -----------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"), [(NatsTimeoutError(), common.UNAVAILABLE), (RuntimeError(), common.INTERNAL)]
)
async def test_a_query_without_nats_is_unavailable_and_a_bug_internal(error: Exception, code: str):
    answer = handlers.query_endpoint(x.Predict, Calls(error))
    reply = await answer(SimpleNamespace(body=b'{"export_id": "e", "images": []}', headers={}))  # type: ignore[arg-type]
    assert msgspec.json.decode(reply, type=common.CommandRejected).code == code
