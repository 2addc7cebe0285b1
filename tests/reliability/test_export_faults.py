"""An exporter killed in the middle of an export: the export ends failed, never running."""

from __future__ import annotations

import pytest

from tests.stack import Stack
from tests.training_helpers import API, client, learnable_split, submit, wait, wait_status

pytestmark = pytest.mark.integration


def test_an_exporter_killed_mid_export_leaves_it_failed_and_a_new_export_works(own_stack: Stack):
    stack = own_stack.up()
    project_id, split_id = learnable_split(stack, per_class=30, test=0.25)
    run = submit(stack, project_id, split_id, hyperparameters={"epochs": 1}).json()["data"]
    wait_status(stack, run["id"], "completed")
    with client(stack) as api:
        for _ in range(5):  # an export may finish before the kill on a fast machine: try again
            export = api.post(f"{API}/export/run", json={"run_id": run["id"]}).json()["data"]
            stack.kill("exporter")
            if api.get(f"{API}/export/{export['id']}").json()["data"]["status"] == "running":
                break
            stack.start("exporter")
            stack.wait_healthy()
        else:
            pytest.fail("every export finished before the exporter could be killed")
        stack.start("exporter")
        stack.wait_healthy()
        failed = wait(
            lambda: (
                (d := api.get(f"{API}/export/{export['id']}").json()["data"])["status"] != "running"
                and d
            )
        )
        assert failed["status"] == "failed"
        assert failed["error"]["code"] == "INTERRUPTED"
        assert api.get(f"{API}/export/{export['id']}/download").status_code == 409
        again = api.post(f"{API}/export/run", json={"run_id": run["id"]}).json()["data"]
        done = wait(
            lambda: (
                (d := api.get(f"{API}/export/{again['id']}").json()["data"])["status"] != "running"
                and d
            )
        )
        assert done["status"] == "completed", done
