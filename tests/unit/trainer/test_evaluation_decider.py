"""The Evaluation decider, given its events, when a command or an outcome, then events or a
refusal.

Pure: the run it evaluates is given as the Run state its stored events fold into, and the
number of the subset's images of the run's classes as the handler counted them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import reduce

from contracts import training as c
from services.kernel.domain import Conflict
from services.trainer import domain
from services.trainer.domain.evaluation import (
    CheckpointNotSavedYet,
    Evaluation,
    InvalidEvaluation,
    State,
    evolve,
    finish,
    start,
)
from tests.scenario import Decider

EVALUATION: Decider[State, c.EvaluateRun, c.Event] = Decider(evolve=evolve, initial=None)
given = EVALUATION.given

RUN, EVAL, ME = "r" * 32, "v" * 32, "trainer-a"
QUEUED = c.RunQueued(
    run_id=RUN, experiment_id="e" * 32, project_id="p" * 32, split_id="s" * 32,
    hyperparameters=c.Hyperparameters(epochs=3), classes=["a", "b"],
    train_images=10, val_images=4,
)  # fmt: skip


def saved(epoch: int, kind: str) -> c.CheckpointSaved:
    return c.CheckpointSaved(
        run_id=RUN, epoch=epoch, kind=kind, sha256=f"{epoch:064x}", size=1,
        object_name=f"runs/{RUN}/epoch-{epoch:04d}.pt",
    )  # fmt: skip


def run_of(*events: c.Event) -> domain.State:
    return reduce(domain.evolve, events, None)


#: A run with its best checkpoint at epoch 1 and its last at epoch 2.
TRAINED = run_of(QUEUED, saved(1, "best"), saved(1, "last"), saved(2, "last"))


def evaluate(checkpoint: str = "best", subset: str = "val") -> c.EvaluateRun:
    return c.EvaluateRun(evaluation_id=EVAL, run_id=RUN, checkpoint=checkpoint, subset=subset)


Decision = Callable[[State], Sequence[c.Event]]


def starting(command: c.EvaluateRun, run: domain.State = TRAINED, images: int = 4) -> Decision:
    """Start it, given the run and the images of the subset the handler counted."""
    return lambda state: start(state, command, run=run, images=images, instance=ME)


def started(checkpoint: str = "best", epoch: int = 1) -> c.EvaluationStarted:
    return c.EvaluationStarted(
        evaluation_id=EVAL, run_id=RUN, checkpoint=checkpoint, subset="val", images=4,
        checkpoint_epoch=epoch, instance=ME,
    )  # fmt: skip


def completed() -> c.EvaluationCompleted:
    return c.EvaluationCompleted(
        evaluation_id=EVAL, run_id=RUN, metrics={"accuracy": 0.5}, predictions=[]
    )


def failed() -> c.EvaluationFailed:
    return c.EvaluationFailed(evaluation_id=EVAL, run_id=RUN, code="X", message="it broke")


# -- start -----------------------------------------------------------------------------------


def test_an_evaluation_starts_on_the_newest_checkpoint_of_its_kind() -> None:
    given().when(starting(evaluate("best"))).then(started("best", epoch=1))
    given().when(starting(evaluate("last"))).then(started("last", epoch=2))


def test_a_started_evaluation_is_running_on_its_instance() -> None:
    assert given().when(starting(evaluate())).after() == Evaluation(EVAL, RUN, "running", ME)


def test_an_evaluation_id_is_used_once() -> None:
    given(started()).when(starting(evaluate())).then_refused(Conflict)
    given(started(), completed()).when(starting(evaluate())).then_refused(Conflict)


def test_a_checkpoint_or_subset_that_does_not_exist_is_refused() -> None:
    given().when(starting(evaluate(checkpoint="first"))).then_refused(
        InvalidEvaluation, field="checkpoint"
    )
    given().when(starting(evaluate(subset="all"))).then_refused(InvalidEvaluation, field="subset")


def test_an_evaluation_of_a_run_that_does_not_exist_is_refused() -> None:
    refusal = (
        given()
        .when(starting(evaluate(), run=None))
        .then_refused(domain.RunNotFound, field="run_id")
    )
    assert refusal.code == "NOT_FOUND"


def test_a_run_without_a_checkpoint_of_that_kind_yet_is_refused() -> None:
    only_last = run_of(QUEUED, saved(1, "last"))
    given().when(starting(evaluate("best"), run=only_last)).then_refused(CheckpointNotSavedYet)
    given().when(starting(evaluate("last"), run=run_of(QUEUED))).then_refused(CheckpointNotSavedYet)


def test_a_subset_with_no_image_of_the_run_s_classes_is_refused() -> None:
    given().when(starting(evaluate(), images=0)).then_refused(InvalidEvaluation, field="subset")


def test_the_command_s_own_values_are_checked_before_the_run() -> None:
    # a bad subset of a run that does not exist: the values are what the caller must fix
    given().when(starting(evaluate(subset="all"), run=None)).then_refused(
        InvalidEvaluation, field="subset"
    )


# -- finish ----------------------------------------------------------------------------------


def test_a_running_evaluation_ends_completed_or_failed() -> None:
    ending = given(started()).when(lambda state: finish(state, completed()))
    ending.then(completed())
    assert ending.after() == Evaluation(EVAL, RUN, "completed", ME)
    failing = given(started()).when(lambda state: finish(state, failed()))
    failing.then(failed())
    assert failing.after() == Evaluation(EVAL, RUN, "failed", ME)


def test_an_evaluation_that_is_not_running_cannot_end() -> None:
    given().when(lambda state: finish(state, completed())).then_refused(Conflict)
    given(started(), completed()).when(lambda state: finish(state, failed())).then_refused(Conflict)
    given(started(), failed()).when(lambda state: finish(state, completed())).then_refused(Conflict)


def test_an_outcome_without_a_start_folds_into_nothing() -> None:
    assert EVALUATION.fold([completed()]) is None and EVALUATION.fold([failed()]) is None


def test_an_ended_evaluation_says_how_it_ended() -> None:
    error = given(started(), failed()).when(lambda s: finish(s, completed())).then_refused(Conflict)
    assert error.message == f"evaluation {completed().evaluation_id} has already failed"
