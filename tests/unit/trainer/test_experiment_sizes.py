"""A search whose space can give an image size below the least of a model it can give is
refused when it is created, naming the size: the trainer refuses such a run (torchvision
backbones and detectors need 32 px; smallcnn takes 16), so each trial drawn there failed one
by one after the search had been accepted. ``check_experiment``, which the gateway answers as
a 422 VALIDATION_ERROR and the trainer's decider runs again."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from contracts import experiments as x
from contracts import training as c

DETECTOR = "ssdlite320_mobilenet_v3_large"


def command(family: str = "any", **space: x.Param) -> x.CreateExperiment:
    base = x.CreateExperiment(
        experiment_id="e" * 32, project_id="p" * 32, split_id="s" * 32, name="search",
        architecture_type=family, objectives=x.default_objectives(),
    )  # fmt: skip
    return msgspec.structs.replace(base, search_config=space)


@pytest.mark.parametrize(
    ("cmd", "field", "says"),
    [
        (command("resnet", image_size=x.Fixed(value=16)), "value", "for resnet18"),
        (command("any", image_size=x.IntRange(low=16, high=64)), "low", "for mobilenet_v3_small"),
        (
            command("any", model=x.Categorical(choices=["smallcnn", "resnet18"]),
                    image_size=x.Categorical(choices=[64, 24, 128])),
            "choices.1", "for resnet18, which this search may train, not 24",
        ),
        (command(x.DETECTION_FAMILY, image_size=x.Fixed(value=24)), "value", "not 24"),
        (
            command(x.DETECTION_FAMILY, model=x.Fixed(value=DETECTOR),
                    image_size=x.IntRange(low=16, high=96)),
            "low", f"for {DETECTOR}",
        ),
    ],
)  # fmt: skip
def test_a_size_below_what_a_chosen_model_takes_is_refused_naming_it(
    cmd: x.CreateExperiment, field: str, says: str
) -> None:
    problem = x.check_experiment(cmd)
    assert problem is not None, cmd.search_config
    assert problem[0] == f"search_config.image_size.{field}"
    assert f"must be at least {c.TORCHVISION_MIN_SIZE}" in problem[1] and says in problem[1]


@pytest.mark.parametrize(
    "space",
    [
        {"image_size": x.IntRange(low=16, high=64)},  # smallcnn alone: 16 px is fine
        {"model": x.Fixed(value="resnet18"), "image_size": x.IntRange(low=32, high=64)},
        {"model": x.Categorical(choices=["resnet18", "smallcnn"])},  # size not searched
    ],
)
def test_sizes_every_model_of_the_space_takes_are_kept(space: dict[str, Any]) -> None:
    family = "smallcnn" if "model" not in space else "any"
    assert x.check_experiment(command(family, **space)) is None
