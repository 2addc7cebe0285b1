"""The datasets service's subset query over real NATS, as the trainer and the exporter read it
(``kernel.queries.PagedQuery``): page after page, a split made a moment ago seen at once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from faststream.nats import NatsBroker

from contracts import datasets as d
from services.kernel import bus
from services.kernel.domain import Refused
from services.kernel.queries import PagedQuery
from tests import imagesets
from tests.integration.test_datasets_api import import_local, project
from tests.stack import Stack

pytestmark = pytest.mark.integration
STACK_SERVICES = ("projects", "datasets")
API = "/api/v1"


@pytest.fixture
async def broker(stack: Stack) -> AsyncIterator[NatsBroker]:
    connected = bus.make_broker(stack.nats_url, name="test-subsets")
    await connected.connect()
    yield connected
    await bus.stop_broker(connected)


async def test_a_split_made_a_moment_ago_is_read_whole_page_by_page(
    api: httpx.AsyncClient, stack: Stack, broker: NatsBroker
):
    pid = await project(api)
    root = imagesets.folder(stack.imports / uuid.uuid4().hex, {"a": 8, "b": 7})
    await import_local(api, pid, root)
    ratios = {"train": 0.6, "val": 0.4, "test": 0.0}
    made = await api.post(f"{API}/splits", json={"project_id": pid, "name": "s", "ratios": ratios})
    assert made.status_code == 201, made.text
    split_id = made.json()["data"]["id"]
    subsets = PagedQuery(broker, d.Subjects.SUBSET, d.SubsetPage)

    # at once, no waiting: the datasets service answers from the dataset's stored events
    train = await subsets(d.GetSubset(dataset_id=pid, split_id=split_id, subset="train", limit=4))
    val = await subsets(d.GetSubset(dataset_id=pid, split_id=split_id, subset="val", limit=4))

    assert len(train) + len(val) == 15 and len(train) > 4  # more than one page each way
    assert [i.image_id for i in train] == sorted(i.image_id for i in train)
    listed = (await api.get(f"{API}/datasets/{pid}/images", params={"limit": 100})).json()
    labels = {i["id"]: i["label"] for i in listed["data"]["items"]}
    assert {i.image_id: i.label for i in train + val} == labels
    assert all(i.blob == i.image_id for i in train)

    gone = train[0].image_id
    assert (await api.delete(f"{API}/datasets/{pid}/images/{gone}")).status_code == 204
    again = await subsets(d.GetSubset(dataset_id=pid, split_id=split_id, subset="train", limit=4))
    assert [i.image_id for i in again] == [i.image_id for i in train[1:]]


async def test_an_unknown_split_is_refused_not_found(api: httpx.AsyncClient, broker: NatsBroker):
    pid = await project(api)
    subsets = PagedQuery(broker, d.Subjects.SUBSET, d.SubsetPage)
    with pytest.raises(Refused) as refused:
        await subsets(d.GetSubset(dataset_id=pid, split_id="nope", subset="train"))
    assert refused.value.code == "NOT_FOUND"
