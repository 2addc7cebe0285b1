"""The exporter's handlers and jobs on the in-memory event store, with a fake engine and a fake
Object Store: what is stored and answered, and how each way an export can end is recorded.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from nats.js.errors import NotFoundError

from contracts import common
from contracts import exports as x
from contracts import training as t
from contracts.common import CommandAccepted, CommandRejected
from services.exporter import domain, handlers
from services.exporter.jobs import ExportRunner, Job, runner_for
from services.kernel.memstore import InMemoryEventStore
from services.kernel.repository import Repository

E, R, P, S = "e" * 32, "r" * 32, "p" * 32, "s" * 32
WEIGHTS = b"the trained weights"
SHA = hashlib.sha256(WEIGHTS).hexdigest()
RECORD = t.CheckpointSaved(
    run_id=R, epoch=2, kind="best", sha256=SHA, size=len(WEIGHTS),
    object_name=t.checkpoint_object(R, f"epoch-0002-{SHA[:16]}.pt"),
)  # fmt: skip
QUEUED = t.RunQueued(
    run_id=R, experiment_id="x" * 32, project_id=P, split_id=S,
    hyperparameters=t.Hyperparameters(), classes=["cat", "dog"], train_images=4, val_images=2,
)  # fmt: skip


def store(contract: Any) -> InMemoryEventStore[Any]:
    return InMemoryEventStore(
        stream=contract.STREAM, subject=contract.event_subject, event_type=contract.Event
    )


def exports() -> Repository[domain.State]:
    return Repository(store(x), domain.evolve, None)


class FakeObjects:
    def __init__(self, data: Mapping[str, bytes] | None = None, fail: bool = False) -> None:
        self.data = dict(data or {})
        self.fail = fail

    async def put(self, name: str, file: io.BufferedReader) -> None:
        if self.fail:
            raise OSError("the Object Store's disk is full")
        self.data[name] = file.read()

    async def get(self, name: str, writeinto: io.BufferedWriter) -> None:
        if name not in self.data:
            raise NotFoundError
        writeinto.write(self.data[name])


class FakeEngine:
    """The engine's facade: files written, parity as told, a bundle; predictions of 'cat'."""

    class BadImage(ValueError):
        def __init__(self, index: int, reason: str) -> None:
            super().__init__(reason)
            self.index, self.reason = index, reason

    def __init__(self, passed: bool = True) -> None:
        self.passed = passed
        self.exported_from: list[bytes] = []

    def _exported(self, checkpoint: Path, out: Path) -> Any:
        self.exported_from.append(checkpoint.read_bytes())
        out.write_bytes(b"model")
        parity = SimpleNamespace(
            images=2, max_abs_diff=0.5, top1_agreement=0.5, torch_accuracy=1.0,
            onnx_accuracy=0.5, passed=self.passed,
        )  # fmt: skip
        return SimpleNamespace(path=out, size=5, sha256="d" * 64, parity=parity, latency=None)

    def export_onnx(self, checkpoint: Path, out: Path, samples: Any) -> Any:
        return self._exported(checkpoint, out)

    def export_torchscript(self, checkpoint: Path, out: Path, samples: Any) -> Any:
        return self._exported(checkpoint, out)

    def bundle(self, exported: Any, checkpoint: Path, card: Any, out: Path) -> Path:
        out.write_bytes(b"zip")
        return out

    def Predictor(self) -> Any:
        engine = self

        class Predictor:
            def task(self, model: Path) -> str:
                return "classification"

            def predict(self, model: Path, images: list[bytes], top_k: int) -> Any:
                if images[0] == b"bad":
                    raise engine.BadImage(0, "not an image")
                return [[("cat", 0.9)] for _ in images]

        return Predictor()


class FakeSources:
    def __init__(self, run: domain.RunFacts) -> None:
        self.run = run

    async def gather(self, run_id: str) -> tuple[domain.RunFacts, handlers.Samples, Any]:
        if run_id == "bad id":
            raise ValueError(run_id)
        return self.run, [(Path("a.png"), 0)] * self.run.parity_images, self.fetch

    async def fetch(self) -> None:
        raise AssertionError("the request fetched images: only its job may")


class FakeJobs:
    instance = "host-1"

    def __init__(self) -> None:
        self.started: list[tuple[Job, Mapping[str, str]]] = []

    def start(self, job: Job, headers: Mapping[str, str]) -> None:
        self.started.append((job, headers))


RUN = domain.RunFacts(True, {"best": RECORD}, 2)
TRACE = {"traceparent": f"00-{'1' * 32}-{'2' * 16}-01"}


async def ask(run: domain.RunFacts = RUN, **fields: Any) -> tuple[Any, FakeJobs, Repository]:
    repo, jobs = exports(), FakeJobs()
    command = x.RequestExport(**{"export_id": E, "run_id": R, **fields})
    sources: Any = FakeSources(run)
    reply = await handlers.request_export(command, TRACE, exports=repo, sources=sources, jobs=jobs)
    return reply, jobs, repo


# --- request_export -------------------------------------------------------------------------


async def test_an_accepted_request_is_stored_and_its_job_started_in_its_trace() -> None:
    reply, jobs, repo = await ask()
    assert isinstance(reply, CommandAccepted) and reply.events == 1
    state, _ = await repo.get(E)
    assert state == domain.Export(E, R, "running", "onnx")
    [(job, headers)] = jobs.started
    assert (job.export_id, job.run_id, job.format, job.record) == (E, R, "onnx", RECORD)
    assert len(job.samples) == 2 and headers == TRACE
    assert getattr(job.fetch, "__name__", None) == "fetch"  # the job's: no answer waits for it


@pytest.mark.parametrize(
    ("run", "fields", "code", "field"),
    [
        (RUN, {"format": "tflite"}, common.VALIDATION_ERROR, "format"),
        (domain.RunFacts(False), {}, common.NOT_FOUND, "run_id"),
        (domain.RunFacts(True), {}, common.CONFLICT, None),
        (domain.RunFacts(True, {"best": RECORD}, 0), {}, common.VALIDATION_ERROR, None),
        (RUN, {"export_id": "bad id"}, common.NOT_FOUND, None),
        (RUN, {"run_id": "bad id"}, common.NOT_FOUND, None),
    ],
)
async def test_a_refused_request_stores_nothing_and_starts_no_job(
    run: domain.RunFacts, fields: dict[str, Any], code: str, field: str | None
) -> None:
    reply, jobs, repo = await ask(run, **fields)
    assert isinstance(reply, CommandRejected), reply
    assert (reply.code, reply.field, reply.status) == (code, field, 0)
    assert jobs.started == [] and await repo.store.version(E) == 0


async def test_an_id_no_stream_can_hold_is_answered_as_a_missing_run() -> None:
    reply, _, _ = await ask(export_id="bad id")
    assert reply.message == "that run does not exist"


async def test_a_second_request_of_the_same_export_is_refused_and_starts_nothing() -> None:
    repo, jobs, sources = exports(), FakeJobs(), FakeSources(RUN)
    command = x.RequestExport(export_id=E, run_id=R)
    for _ in range(2):
        reply = await handlers.request_export(command, {}, exports=repo, sources=sources, jobs=jobs)
    assert isinstance(reply, CommandRejected) and reply.code == common.CONFLICT
    assert len(jobs.started) == 1


# --- predict --------------------------------------------------------------------------------


async def completed_export(repo: Repository[domain.State]) -> None:
    requested = x.ExportRequested(
        export_id=E, run_id=R, checkpoint="best", format="onnx", checkpoint_sha256=SHA,
        checkpoint_epoch=2,
    )  # fmt: skip
    parity = x.Parity(
        images=2, max_abs_diff=0, top1_agreement=1, torch_accuracy=None, exported_accuracy=None,
        passed=True,
    )  # fmt: skip
    done = x.ExportCompleted(
        export_id=E, run_id=R, format="onnx", file_name="model.onnx", size=5, sha256="d" * 64,
        parity=parity, latency=None, bundle_size=3, bundle_sha256="f" * 64,
    )  # fmt: skip
    await repo.store.append(E, [requested, done], 0)


async def predict(repo: Repository[domain.State], images: list[bytes]) -> Any:
    table = handlers.table(
        exports=repo, sources=None, jobs=FakeJobs(), files=Path("/x"), engine=FakeEngine()
    )  # type: ignore[arg-type]
    return await table[x.Predict](x.Predict(export_id=E, images=images, top_k=1), {})


async def test_a_completed_onnx_export_predicts() -> None:
    repo = exports()
    await completed_export(repo)
    answer = await predict(repo, [b"png"])
    assert isinstance(answer, x.Predictions) and answer.results == [[("cat", 0.9)]]


async def test_predict_answers_each_refusal_with_its_code_and_field() -> None:
    repo = exports()
    missing = await predict(repo, [b"png"])
    assert (missing.code, missing.message) == (common.NOT_FOUND, f"export {E} does not exist")
    await completed_export(repo)
    none = await predict(repo, [])
    assert (none.code, none.field) == (common.VALIDATION_ERROR, "images")
    bad = await predict(repo, [b"bad"])
    assert (bad.code, bad.field) == (common.VALIDATION_ERROR, "images[0]")
    assert bad.message == "image 1 is not a readable image: not an image"


# --- jobs -----------------------------------------------------------------------------------


def runner(
    tmp_path: Path, objects: FakeObjects, engine: FakeEngine, files: FakeObjects | None = None
) -> ExportRunner:
    return ExportRunner(
        runner_for(exports(), "host-1"),
        objects=objects,  # type: ignore[arg-type]
        artifacts=tmp_path / "artifacts",
        workdir=tmp_path / "exports",
        engine=engine,
        files=files or FakeObjects(),  # type: ignore[arg-type]
    )


async def run_job(jobs: ExportRunner) -> list[x.Event]:
    """Requests the export, runs its job to the end, and answers the events stored."""
    requested = domain.request(
        None, x.RequestExport(export_id=E, run_id=R), run=RUN, instance="host-1"
    )
    await jobs.exports.store.append(E, requested, 0)
    jobs.start(Job(E, R, "onnx", RECORD, [(Path("a.png"), 0)]), TRACE)
    for task in list(jobs.tasks):
        await task
    return [s.event for s in await jobs.exports.store.load(E)]


def local_checkpoint(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "artifacts" / R / Path(RECORD.object_name).name
    path.parent.mkdir(parents=True)
    path.write_bytes(content)


async def test_a_job_exports_the_local_checkpoint_and_completes(tmp_path: Path) -> None:
    local_checkpoint(tmp_path, WEIGHTS)
    engine = FakeEngine()
    jobs = runner(tmp_path, FakeObjects(), engine)
    events = await run_job(jobs)
    assert isinstance(events[-1], x.ExportCompleted)
    # stored in the trace of the request that started it
    outcome = (await jobs.exports.store.load(E))[-1]
    assert outcome.headers["traceparent"].split("-")[1] == "1" * 32
    assert events[-1].file_name == "model.onnx" and events[-1].bundle_size == 3
    assert events[-1].bundle_sha256 == hashlib.sha256(b"zip").hexdigest()
    assert engine.exported_from == [WEIGHTS]


async def test_a_completed_exports_files_are_in_the_bucket_under_the_names_it_records(
    tmp_path: Path,
) -> None:
    local_checkpoint(tmp_path, WEIGHTS)
    files = FakeObjects()
    events = await run_job(runner(tmp_path, FakeObjects(), FakeEngine(), files))
    done = events[-1]
    assert isinstance(done, x.ExportCompleted)
    assert done.object_name == x.export_object(E, "model.onnx")
    assert done.bundle_object == x.export_object(E, x.BUNDLE_NAME)
    assert files.data == {done.object_name: b"model", done.bundle_object: b"zip"}
    assert hashlib.sha256(files.data[done.bundle_object]).hexdigest() == done.bundle_sha256


async def test_files_come_before_facts_an_export_not_kept_in_the_bucket_fails(
    tmp_path: Path,
) -> None:
    local_checkpoint(tmp_path, WEIGHTS)
    files = FakeObjects(fail=True)
    events = await run_job(runner(tmp_path, FakeObjects(), FakeEngine(), files))
    assert [type(e) for e in events] == [x.ExportRequested, x.ExportFailed]
    assert "disk is full" in events[-1].message  # type: ignore[union-attr]


async def test_a_job_fetches_the_checkpoint_this_machine_lacks(tmp_path: Path) -> None:
    engine = FakeEngine()
    objects = FakeObjects({RECORD.object_name: WEIGHTS})
    events = await run_job(runner(tmp_path, objects, engine))
    assert isinstance(events[-1], x.ExportCompleted) and engine.exported_from == [WEIGHTS]


@pytest.mark.parametrize(
    ("local", "stored", "code"),
    [
        (None, None, "CHECKPOINT_MISSING"),
        (None, b"other weights", "CORRUPT_CHECKPOINT"),
        # a damaged file here fails the export, even with a good copy in the Object Store
        (b"damaged weights", WEIGHTS, "CORRUPT_CHECKPOINT"),
    ],
)
async def test_a_checkpoint_gone_or_not_the_recorded_one_fails_the_export(
    tmp_path: Path, local: bytes | None, stored: bytes | None, code: str
) -> None:
    if local is not None:
        local_checkpoint(tmp_path, local)
    objects = FakeObjects({RECORD.object_name: stored} if stored else {})
    engine = FakeEngine()
    events = await run_job(runner(tmp_path, objects, engine))
    assert isinstance(events[-1], x.ExportFailed) and events[-1].code == code
    assert engine.exported_from == []


async def test_a_parity_failure_fails_the_export_with_its_numbers(tmp_path: Path) -> None:
    local_checkpoint(tmp_path, WEIGHTS)
    events = await run_job(runner(tmp_path, FakeObjects(), FakeEngine(passed=False)))
    assert isinstance(events[-1], x.ExportFailed) and events[-1].code == "PARITY_FAILED"
    assert events[-1].parity is not None and events[-1].parity.exported_accuracy == 0.5


async def test_a_detectors_parity_failure_is_told_in_boxes(tmp_path: Path) -> None:
    local_checkpoint(tmp_path, WEIGHTS)
    engine = FakeEngine(passed=False)
    logits = engine._exported

    def boxes(checkpoint: Path, out: Path) -> Any:
        exported = logits(checkpoint, out)
        exported.parity.min_iou, exported.parity.detections = 0.93, 40
        return exported

    engine._exported = boxes  # type: ignore[method-assign]
    events = await run_job(runner(tmp_path, FakeObjects(), engine))
    assert isinstance(events[-1], x.ExportFailed) and events[-1].code == "PARITY_FAILED"
    assert events[-1].message == (
        "the exported detector's boxes disagree with the trained one's on 50% of 2 images: "
        "smallest IoU of a matched pair 0.930 (needs 0.99), largest score gap 0.5"
    )
    parity = events[-1].parity
    assert parity is not None and (parity.min_iou, parity.detections) == (0.93, 40)


async def test_an_engine_error_fails_the_export_with_its_reason(tmp_path: Path) -> None:
    local_checkpoint(tmp_path, WEIGHTS)
    engine = FakeEngine()
    engine.bundle = None  # type: ignore[assignment,method-assign]
    events = await run_job(runner(tmp_path, FakeObjects(), engine))
    assert isinstance(events[-1], x.ExportFailed) and events[-1].code == "EXPORT_FAILED"
    assert events[-1].message.startswith("TypeError: ")


async def test_an_interrupted_export_fails_once(tmp_path: Path) -> None:
    jobs = runner(tmp_path, FakeObjects(), FakeEngine())
    requested = domain.request(
        None, x.RequestExport(export_id=E, run_id=R), run=RUN, instance="host-1"
    )
    await jobs.exports.store.append(E, requested, 0)
    await jobs.interrupt(E, R)
    await jobs.interrupt(E, R)  # already ended: refused, logged, nothing stored
    events = [s.event for s in await jobs.exports.store.load(E)]
    assert [type(e) for e in events] == [x.ExportRequested, x.ExportFailed]
    assert isinstance(events[-1], x.ExportFailed) and events[-1].code == "INTERRUPTED"
