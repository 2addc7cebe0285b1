"""Evaluation, verified export, download and prediction, from a run trained in the studio."""

from __future__ import annotations

import hashlib

import nats
import numpy as np
import onnxruntime as ort
import pytest
import torch

from contracts import exports as x
from contracts import training as t
from services.vision.preprocess import eval_transform, load_image
from tests.stack import Stack
from tests.training_helpers import API, client, learnable_split, submit, wait, wait_status

pytestmark = pytest.mark.integration
#: The trace each job is requested in: its outcome, stored later by the job, belongs to it too.
TRACES = {"evaluation": "1" * 31 + "e", "export": "2" * 31 + "f"}


def traced(job: str) -> dict[str, str]:
    return {"traceparent": f"00-{TRACES[job]}-{'3' * 16}-01"}


@pytest.fixture(scope="module")
def trained(stack: Stack) -> dict:
    project_id, split_id = learnable_split(stack, per_class=40, test=0.25)
    run = submit(stack, project_id, split_id, hyperparameters={"epochs": 3}).json()["data"]
    return wait_status(stack, run["id"], "completed")


def finished(stack: Stack, path: str) -> dict:
    with client(stack) as api:
        return wait(
            lambda: (d := api.get(path).json()["data"])["status"] in ("completed", "failed") and d
        )


@pytest.fixture(scope="module")
def evaluation(stack: Stack, trained: dict) -> dict:
    with client(stack) as api:
        resp = api.post(
            f"{API}/evaluation/run", json={"run_id": trained["id"]}, headers=traced("evaluation")
        )
        assert resp.status_code == 202, resp.text
    return finished(stack, f"{API}/evaluation/{resp.json()['data']['id']}")


@pytest.fixture(scope="module")
def export(stack: Stack, trained: dict) -> dict:
    with client(stack) as api:
        body = {"run_id": trained["id"], "format": "onnx"}
        resp = api.post(f"{API}/export/run", json=body, headers=traced("export"))
        assert resp.status_code == 202, resp.text
    return finished(stack, f"{API}/export/{resp.json()['data']['id']}")


async def test_a_jobs_outcome_is_stored_in_the_trace_it_was_requested_in(stack, evaluation, export):
    nc = await nats.connect(stack.nats_url)
    try:
        js = nc.jetstream()
        for job, stream, subject in (
            ("evaluation", t.STREAM, t.event_subject(evaluation["id"])),
            ("export", x.STREAM, x.event_subject(export["id"])),
        ):
            last = await js.get_last_msg(stream, subject)
            assert last.headers is not None
            assert last.headers["Studio-Event-Type"].endswith("_completed.v1"), last.headers
            assert last.headers["traceparent"].split("-")[1] == TRACES[job]
    finally:
        await nc.close()


def test_evaluation_metrics_agree_with_its_own_confusion_matrix(stack, trained, evaluation):
    assert evaluation["status"] == "completed", evaluation
    m = evaluation["metrics"]
    matrix = m["confusion_matrix"]["matrix"]
    total = sum(map(sum, matrix))
    assert total == evaluation["images"] == m["images"]
    assert m["accuracy"] == pytest.approx(sum(matrix[i][i] for i in range(len(matrix))) / total)
    assert m["accuracy"] >= 0.8
    for i, row in enumerate(m["per_class"]):
        predicted = sum(r[i] for r in matrix)
        assert row["support"] == sum(matrix[i])
        assert row["recall"] == pytest.approx(matrix[i][i] / sum(matrix[i]))
        assert row["precision"] == pytest.approx(matrix[i][i] / predicted if predicted else 0)
    assert m["top5_accuracy"] is None  # two classes
    # every cell of the confusion matrix can be listed, with thumbnails
    labels = m["confusion_matrix"]["labels"]
    with client(stack) as api:
        cell = api.get(
            f"{API}/evaluation/{evaluation['id']}/cell",
            params={"true": labels[0], "predicted": labels[0]},
        ).json()["data"]
    assert len(cell["items"]) == matrix[0][0]
    assert cell["items"][0]["thumbnail"].endswith(cell["items"][0]["image_id"])


def test_export_is_verified_and_the_download_matches_its_sha256(
    stack, trained, evaluation, export, tmp_path
):
    assert export["status"] == "completed", export
    assert export["parity"]["passed"] is True
    assert export["parity"]["top1_agreement"] == 1.0
    assert export["parity"]["max_abs_diff"] <= 1e-3
    assert export["latency"]["exported_b1"] > 0
    with client(stack) as api:
        resp = api.get(f"{API}/export/{export['id']}/download")
        assert resp.status_code == 200
        assert "attachment" in resp.headers["content-disposition"]
        assert resp.headers["x-checksum-sha256"] == export["sha256"]
        assert hashlib.sha256(resp.content).hexdigest() == export["sha256"]
        part = api.get(f"{API}/export/{export['id']}/download", headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and part.content == resp.content[:100]
        bundle = api.get(f"{API}/export/{export['id']}/bundle")
        assert bundle.status_code == 200
    path = tmp_path / "model.onnx"
    path.write_bytes(resp.content)
    # a fresh onnxruntime session gives the studio's evaluation answers, image by image
    labels = evaluation["metrics"]["confusion_matrix"]["labels"]
    predicted: dict[str, int] = {}
    with client(stack) as api:
        for t in labels:
            for p, name in enumerate(labels):
                cell = api.get(
                    f"{API}/evaluation/{evaluation['id']}/cell",
                    params={"true": t, "predicted": name, "limit": 1000},
                ).json()["data"]
                predicted |= {item["image_id"]: p for item in cell["items"]}
    assert len(predicted) == evaluation["images"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    size = trained["hyperparameters"]["image_size"]
    store = stack.workspace / "blobs" / "blobs"
    ids = sorted(predicted)
    paths = [store / i[:2] / i[2:4] / i for i in ids]
    batch = torch.stack([eval_transform(size)(load_image(p, size)) for p in paths]).numpy()
    logits = session.run(None, {session.get_inputs()[0].name: batch})[0]
    assert list(np.argmax(logits, axis=1)) == [predicted[i] for i in ids]


def test_predict_over_rest_returns_sorted_top_k(stack, export):
    blobs = stack.workspace / "blobs" / "blobs"
    image = next(p for p in sorted(blobs.rglob("*")) if p.is_file()).read_bytes()
    with client(stack) as api:
        resp = api.post(
            f"{API}/export/{export['id']}/predict",
            files=[
                ("file", ("a.png", image, "image/png")),
                ("file", ("b.png", image, "image/png")),
            ],
            params={"top_k": 5},
        )
        assert resp.status_code == 200, resp.text
        first, second = resp.json()["data"]["predictions"]
        assert first == second and len(first) == 2  # k is capped at the number of classes
        assert first[0]["score"] >= first[1]["score"]
        bad = api.post(
            f"{API}/export/{export['id']}/predict",
            files=[("file", ("x.png", b"not an image", "image/png"))],
        )
        assert bad.status_code == 422, bad.text
        none = api.post(f"{API}/export/{export['id']}/predict", data={"x": "y"})
        assert none.status_code == 422


def test_bad_export_requests(stack, trained):
    with client(stack) as api:
        fmt = api.post(f"{API}/export/run", json={"run_id": trained["id"], "format": "tflite"})
        assert fmt.status_code == 422 and fmt.json()["error"]["field"] == "format"
        unknown = api.post(f"{API}/export/run", json={"run_id": "0" * 32})
        assert unknown.status_code == 404
        evaluation = api.post(f"{API}/evaluation/run", json={"run_id": "0" * 32})
        assert evaluation.status_code == 404
        assert api.get(f"{API}/export/{'0' * 32}/download").status_code == 404


def test_a_corrupt_checkpoint_fails_the_export_and_its_download_is_409(stack, trained):
    best = stack.workspace / "artifacts" / trained["id"] / "best.pt"
    original = best.read_bytes()
    best.write_bytes(original[:-10] + bytes(10))
    try:
        with client(stack) as api:
            resp = api.post(f"{API}/export/run", json={"run_id": trained["id"]})
        failed = finished(stack, f"{API}/export/{resp.json()['data']['id']}")
    finally:
        best.write_bytes(original)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "CORRUPT_CHECKPOINT"
    with client(stack) as api:
        assert api.get(f"{API}/export/{failed['id']}/download").status_code == 409


def test_a_run_without_a_checkpoint_cannot_be_exported_or_evaluated(stack, trained):
    project_id, split_id = trained["project_id"], trained["split_id"]
    busy = submit(stack, project_id, split_id, hyperparameters={"epochs": 200}).json()["data"]
    wait_status(stack, busy["id"], "running")
    waiting = submit(stack, project_id, split_id).json()["data"]
    with client(stack) as api:
        stopped = api.post(f"{API}/training/runs/{waiting['id']}/stop").json()["data"]
        assert (stopped["status"], stopped["epochs_done"]) == ("stopped", 0)
        export = api.post(f"{API}/export/run", json={"run_id": waiting["id"]})
        assert export.status_code == 409, export.text
        evaluation = api.post(f"{API}/evaluation/run", json={"run_id": waiting["id"]})
        assert evaluation.status_code == 409, evaluation.text
        api.post(f"{API}/training/runs/{busy['id']}/stop")
    wait_status(stack, busy["id"], "stopped")
