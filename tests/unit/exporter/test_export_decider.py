"""The Export decider, given past events, when a command, then new events or a refusal.

Pure: no bus, no store, no engine. Events are compared on their payload, since the handler
stamps the envelope later.
"""

from __future__ import annotations

from typing import Any

import pytest
from msgspec.structs import replace

from contracts import common
from contracts import exports as x
from contracts import training as t
from services.exporter import domain
from services.exporter.domain import (
    CheckpointNotSaved,
    Export,
    ExportNotFound,
    NoImagesSent,
    NoParityImages,
    NotPredictable,
    ParityNotPassed,
    RunFacts,
    RunNotFound,
    State,
    UnknownCheckpoint,
    UnknownFormat,
)
from services.kernel.domain import Conflict, DomainError
from tests.scenario import Decider

EXPORT: Decider[State, Any, x.Event] = Decider(evolve=domain.evolve, initial=None)
given = EXPORT.given

E, R = "e" * 32, "r" * 32


def saved(kind: str, epoch: int, sha: str) -> t.CheckpointSaved:
    return t.CheckpointSaved(
        run_id=R, epoch=epoch, kind=kind, sha256=sha, size=1,
        object_name=t.checkpoint_object(R, f"epoch-{epoch:04d}-{sha[:16]}.pt"),
    )  # fmt: skip


RUN = RunFacts(
    exists=True,
    checkpoints={"best": saved("best", 2, "b" * 64), "last": saved("last", 3, "c" * 64)},
    parity_images=120,
)
PARITY = x.Parity(
    images=120, max_abs_diff=1e-5, top1_agreement=1.0, torch_accuracy=0.9,
    exported_accuracy=0.9, passed=True,
)  # fmt: skip
REQUESTED = x.ExportRequested(
    export_id=E, run_id=R, checkpoint="best", format="onnx", checkpoint_sha256="b" * 64,
    checkpoint_epoch=2, instance="host-1",
)  # fmt: skip
COMPLETED = x.ExportCompleted(
    export_id=E, run_id=R, format="onnx", file_name="model.onnx", size=10, sha256="d" * 64,
    parity=PARITY, latency=None, bundle_size=20, bundle_sha256="f" * 64,
)  # fmt: skip
FAILED = x.ExportFailed(export_id=E, run_id=R, code="EXPORT_FAILED", message="boom")


def request(run: RunFacts = RUN, **fields: Any) -> Any:
    command = x.RequestExport(export_id=E, run_id=R, **fields)
    return lambda state: domain.request(state, command, run=run, instance="host-1")


def finish(outcome: x.ExportCompleted | x.ExportFailed) -> Any:
    return lambda state: domain.finish(state, outcome)


# --- request --------------------------------------------------------------------------------


def test_request_an_export_of_the_best_checkpoint_on_record() -> None:
    given().when(request()).then(REQUESTED)


def test_request_an_export_of_the_last_checkpoint_as_torchscript() -> None:
    given().when(request(checkpoint="last", format="torchscript")).then(
        x.ExportRequested(
            export_id=E,
            run_id=R,
            checkpoint="last",
            format="torchscript",
            checkpoint_sha256="c" * 64,
            checkpoint_epoch=3,
            instance="host-1",
        )
    )


def test_a_request_is_running_on_the_instance_that_asked() -> None:
    assert given().when(request()).after() == Export(E, R, "running", "onnx")


def test_request_refuses_an_unknown_format() -> None:
    error = given().when(request(format="tflite")).then_refused(UnknownFormat, field="format")
    assert error.message == "format must be one of onnx, torchscript"


def test_request_refuses_an_unknown_checkpoint() -> None:
    given().when(request(checkpoint="first")).then_refused(UnknownCheckpoint, field="checkpoint")


def test_the_commands_own_values_are_checked_before_the_run() -> None:
    missing = RunFacts(exists=False)
    given().when(request(missing, format="tflite")).then_refused(UnknownFormat, field="format")


def test_request_refuses_a_run_that_does_not_exist() -> None:
    given().when(request(RunFacts(exists=False))).then_refused(RunNotFound, field="run_id")


def test_request_refuses_a_run_without_that_checkpoint_yet() -> None:
    only_last = RunFacts(True, {"last": RUN.checkpoints["last"]}, 120)
    error = given().when(request(only_last)).then_refused(CheckpointNotSaved)
    assert error.message == f"run {R} has no best checkpoint yet"


def test_request_refuses_a_split_without_test_or_validation_images() -> None:
    no_images = RunFacts(True, RUN.checkpoints, 0)
    given().when(request(no_images)).then_refused(NoParityImages)


def test_request_refuses_an_export_that_already_exists() -> None:
    error = given(REQUESTED).when(request()).then_refused(Conflict)
    assert error.message == f"export {E} already exists"
    given(REQUESTED, FAILED).when(request()).then_refused(Conflict)


# --- finish ---------------------------------------------------------------------------------


def test_a_running_export_completes_with_its_file() -> None:
    scenario = given(REQUESTED).when(finish(COMPLETED))
    scenario.then(COMPLETED)
    assert scenario.after() == Export(E, R, "completed", "onnx", "model.onnx")


def test_a_running_export_fails_with_its_reason() -> None:
    given(REQUESTED).when(finish(FAILED)).then(FAILED)
    assert given(REQUESTED).when(finish(FAILED)).after() == Export(E, R, "failed", "onnx")


@pytest.mark.parametrize(
    ("history", "why"),
    [
        ((), f"export {E} does not exist"),
        ((REQUESTED, COMPLETED), f"export {E} has already completed"),
        ((REQUESTED, FAILED), f"export {E} has already failed"),
    ],
)
def test_only_a_running_export_finishes(history: tuple[x.Event, ...], why: str) -> None:
    for outcome in (COMPLETED, FAILED):
        error = given(*history).when(finish(outcome)).then_refused(Conflict)
        assert error.message == why


def test_an_export_whose_parity_failed_cannot_complete() -> None:
    completed = replace(COMPLETED, parity=replace(PARITY, passed=False))
    given(REQUESTED).when(finish(completed)).then_refused(ParityNotPassed)


def test_a_parity_failure_fails_the_export_with_the_numbers() -> None:
    assert domain.parity_failure(E, R, PARITY) is None
    bad = replace(PARITY, max_abs_diff=0.25, top1_agreement=0.5, passed=False)
    failure = domain.parity_failure(E, R, bad)
    assert failure is not None
    given(REQUESTED).when(finish(failure)).then(
        x.ExportFailed(
            export_id=E,
            run_id=R,
            code="PARITY_FAILED",
            parity=bad,
            message="the exported model disagrees with the trained one: max |diff| 0.25, "
            "top-1 agreement 50.00%",
        )
    )


def test_an_export_its_exporter_stopped_in_fails_as_interrupted() -> None:
    given(REQUESTED).when(finish(domain.interrupted(E, R))).then(
        x.ExportFailed(
            export_id=E,
            run_id=R,
            code="INTERRUPTED",
            message="the exporter stopped during the export; request it again",
        )
    )


# --- predict --------------------------------------------------------------------------------


def predictable(history: tuple[x.Event, ...], images: list[bytes] | None = None) -> Export:
    query = x.Predict(export_id=E, images=[b"png"] if images is None else images)
    return domain.predictable(EXPORT.fold(history), query)


def test_a_completed_onnx_export_predicts() -> None:
    assert predictable((REQUESTED, COMPLETED)).file == "model.onnx"


def test_predict_refuses_an_export_that_does_not_exist() -> None:
    with pytest.raises(ExportNotFound, match=f"export {E} does not exist"):
        predictable(())


@pytest.mark.parametrize(
    "history",
    [
        (REQUESTED,),
        (REQUESTED, FAILED),
        (replace(REQUESTED, format="torchscript"), replace(COMPLETED, format="torchscript")),
    ],
)
def test_predict_refuses_what_is_not_a_completed_onnx_export(history: tuple[x.Event, ...]) -> None:
    with pytest.raises(NotPredictable, match="only a completed ONNX export predicts"):
        predictable(history)


def test_predict_refuses_a_query_without_images() -> None:
    with pytest.raises(NoImagesSent) as error:
        predictable((REQUESTED, COMPLETED), images=[])
    assert error.value.field == "images"


# --- evolve and codes -----------------------------------------------------------------------


def test_an_outcome_without_a_request_folds_into_nothing() -> None:
    assert EXPORT.fold([COMPLETED]) is None and EXPORT.fold([FAILED]) is None


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UnknownFormat, common.VALIDATION_ERROR),
        (UnknownCheckpoint, common.VALIDATION_ERROR),
        (NoParityImages, common.VALIDATION_ERROR),
        (NoImagesSent, common.VALIDATION_ERROR),
        (RunNotFound, common.NOT_FOUND),
        (ExportNotFound, common.NOT_FOUND),
        (CheckpointNotSaved, common.CONFLICT),
        (ParityNotPassed, common.CONFLICT),
        (NotPredictable, common.CONFLICT),
    ],
)
def test_each_refusal_answers_its_contract_code(error: type[DomainError], code: str) -> None:
    assert error.code == code
