"""The read models' queries, on events folded without NATS: given these events, a route that
asks this reads that."""

from __future__ import annotations

from pathlib import Path

from contracts import datasets as d
from contracts import projects as p
from contracts import training as t
from services.gateway.readmodels import datasets, projects, training
from services.kernel.sqlite import session
from tests.unit.gateway.fold import folded

DATASET = "d" * 32


def project(project_id: str, name: str) -> p.ProjectCreated:
    return p.ProjectCreated(project_id=project_id, name=name)


async def test_projects_are_filtered_by_name_text_literally_and_paged(tmp_path: Path):
    engine = await folded(
        tmp_path,
        projects.ProjectsProjector(),
        project("a" * 32, "cats_v1"),
        project("b" * 32, "cats-v1"),
        project("c" * 32, "dogs 100%"),
        p.ProjectArchived(project_id="c" * 32),
    )
    async with session(engine) as db:
        underscore = await projects.list_projects(
            db, q="s_v", limit=10, offset=0, archived=None, sort="name"
        )
        percent = await projects.list_projects(db, q="0%", limit=10, offset=0, archived=True)
        active = await projects.list_projects(db, q=None, limit=1, offset=1, archived=False)
        gone = await projects.get_project(db, project_id="x" * 32)
    await engine.dispose()
    assert [r.name for r in underscore.items] == ["cats_v1"]
    assert [r.name for r in percent.items] == ["dogs 100%"]
    assert (len(active.items), active.total) == (1, 2)
    assert gone is None


def image(image_id: str, filename: str, label: str) -> d.ImageRecord:
    return d.ImageRecord(
        image_id=image_id, filename=filename, label=label, width=10, height=20, size=100,
        format="PNG", phash="0" * 16,
    )  # fmt: skip


def dataset_history() -> list[d.Event]:
    images = [image(f"{n}" * 32, f"{n}.png", "cat" if n % 2 else "dog") for n in range(1, 6)]
    return [
        d.ImportStarted(
            dataset_id=DATASET, import_id="i" * 32, source_kind="local", source="/x", format="auto"
        ),
        d.ImagesAdded(dataset_id=DATASET, import_id="i" * 32, images=images),
        d.SplitCreated(
            dataset_id=DATASET, split_id="s" * 32, name="first", strategy="random",
            ratios={"train": 0.6, "val": 0.4}, seed=0, images=5, groups=5,
            counts={"train": {"cat": 2, "dog": 1}, "val": {"cat": 1, "dog": 1}}, recipe_hash="h",
            deviations=[d.SplitDeviation("cat", "val", 0.5, 1, "too few")],
        ),
        d.SplitAssigned(
            dataset_id=DATASET, split_id="s" * 32, part=0,
            assignment={"1" * 32: "train", "2" * 32: "val", "3" * 32: "train"},
        ),
    ]  # fmt: skip


async def test_images_page_by_file_name_with_a_cursor_and_a_split_subset(tmp_path: Path):
    engine = await folded(tmp_path, datasets.DatasetsProjector(), *dataset_history())
    async with session(engine) as db:
        first = await datasets.list_images(db, dataset_id=DATASET, limit=2)
        last = first.items[-1]
        second = await datasets.list_images(
            db, dataset_id=DATASET, limit=2, after=(last.filename, last.image_id)
        )
        train = await datasets.list_images(
            db, dataset_id=DATASET, limit=10, split_id="s" * 32, subset="train", label="cat"
        )
        summary = await datasets.dataset_summary(db, dataset_id=DATASET)
        split = await datasets.split_detail(db, split_id="s" * 32)
    await engine.dispose()
    assert ([r.filename for r in first.items], first.total, first.more) == (
        ["1.png", "2.png"], 5, True,
    )  # fmt: skip
    assert [r.filename for r in second.items] == ["3.png", "4.png"]
    assert [r.filename for r in train.items] == ["1.png", "3.png"]
    assert (summary["images"], summary["classes"]) == (5, {"cat": 3, "dog": 2})
    assert [s["id"] for s in summary["splits"]] == ["s" * 32]
    assert split is not None and split["deviations"][0]["reason"] == "too few"


def queued(run_id: str, experiment_id: str = "e" * 32) -> t.RunQueued:
    return t.RunQueued(
        run_id=run_id, experiment_id=experiment_id, project_id="p" * 32, split_id="s" * 32,
        hyperparameters=t.Hyperparameters(epochs=3), classes=["a", "b"],
        train_images=8, val_images=2,
    )  # fmt: skip


async def test_the_queue_orders_runs_as_they_were_queued_and_counts_by_status(tmp_path: Path):
    started = t.RunStarted(
        run_id="a" * 32, instance="t1", device="cpu", lease="slot", attempt=1, start_epoch=1
    )
    engine = await folded(
        tmp_path,
        training.TrainingProjector(),
        queued("a" * 32),
        queued("b" * 32),
        queued("c" * 32, experiment_id="f" * 32),
        started,
    )
    async with session(engine) as db:
        running, waiting = await training.queue(db)
        position = await training.queue_position(db, run=waiting[-1])
        counts = await training.run_counts(db)
        experiment = await training.experiment_runs(db, experiment_id="e" * 32)
        detail = await training.run_detail(db, run_id="a" * 32)
    await engine.dispose()
    assert [r.run_id for r in running] == ["a" * 32]
    assert [r.run_id for r in waiting] == ["b" * 32, "c" * 32]
    assert (position, counts) == (2, {"running": 1, "queued": 2})
    assert [r.run_id for r in experiment] == ["a" * 32, "b" * 32]
    assert detail is not None and (detail["history"], detail["checkpoints"]) == ([], [])


async def test_a_cancelled_import_reads_cancelled_and_a_refused_one_failed(tmp_path: Path):
    started = dataset_history()[0]
    engine = await folded(
        tmp_path,
        datasets.DatasetsProjector(),
        started,
        d.ImportFailed(dataset_id=DATASET, import_id="i" * 32, code="CANCELLED", message="x"),
    )
    async with session(engine) as db:
        cancelled = await datasets.get_import(db, import_id="i" * 32)
        missing = await datasets.get_import(db, import_id="j" * 32)
    await engine.dispose()
    assert cancelled is not None and (cancelled.state, cancelled.done) == ("cancelled", True)
    assert cancelled.error == {"code": "CANCELLED", "message": "x", "field": None, "status": 422}
    assert missing is None
