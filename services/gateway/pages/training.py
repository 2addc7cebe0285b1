"""The training page: a form for every hyperparameter, the queue, a run's live curves, stop and
resume, and runs compared side by side.

The form is drawn from the API's own request models (``RunSubmit``, ``ResumeIn``): their JSON
schema, read once at import, gives each field its type, default, bounds and choices, so the
form cannot offer what the API would refuse nor miss a field the API adds. The page's live parts
are the API's routes: the queue and the comparison table are fragments of their JSON answers
(``FRAGMENTS``); the curves follow the run's SSE stream (``static/js/training.js``). Imports the
training API's request models, the contract's model zoo and the pages' foundation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from contracts.training import MODELS
from services.gateway.api.params import MaybeQueryId, PathId
from services.gateway.api.training import ResumeIn, RunSubmit
from services.gateway.gateway import GatewayDep
from services.gateway.pages.home import project_page
from services.gateway.pages.session import PageUser
from services.gateway.pages.templating import dom_id

router = APIRouter(include_in_schema=False)

#: (method, API route) → the fragment template htmx gets from it.
FRAGMENTS: Final[dict[tuple[str, str], str]] = {
    ("GET", "/api/training/queue"): "fragments/training/queue.html",
    ("GET", "/api/training/compare"): "fragments/training/compare.html",
}

#: Fields of ``RunSubmit`` the page fills itself: the project is the page's, the split has its
#: own list (the project's splits), and each run starts an experiment of its own.
SET_BY_PAGE: Final = frozenset({"project_id", "split_id", "experiment_id"})
#: Words a string field may be that its schema leaves open: the trainer checks the model
#: against the contract's zoo, so the form offers exactly that.
OPEN_CHOICES: Final[Mapping[str, tuple[str, ...]]] = {"hyperparameters.model": MODELS}
#: What a field means, where the schema has no description of it (a schema's own wins).
HINTS: Final[Mapping[str, str]] = {
    "hyperparameters.model": "smallcnn is the fastest; the others are torchvision backbones.",
    "hyperparameters.epochs": "Passes over the training images.",
    "hyperparameters.batch_size": "Images per optimiser step.",
    "hyperparameters.learning_rate": "The step size at the start of the schedule.",
    "hyperparameters.schedule": "How the learning rate changes over the epochs.",
    "hyperparameters.weight_decay": "L2 penalty on the weights.",
    "hyperparameters.image_size": "Images are resized to this many pixels a side.",
    "hyperparameters.augmentation": "Random flips and crops of the training images.",
    "hyperparameters.class_weights": "auto weighs rare classes up (inverse frequency).",
    "hyperparameters.early_stopping_patience": "Epochs without a better validation "
    "accuracy before stopping; 0 never stops early.",
    "hyperparameters.seed": "The same seed and data give the same run.",
    "hyperparameters.mixed_precision": "auto uses AMP on CUDA only.",
    "hyperparameters.workers": "Data-loading processes; 0 loads in the training thread.",
    "hyperparameters.pretrained": "A weights file on the trainer's machine; empty starts "
    "from scratch.",
    "if_busy": "queue waits for a free device; reject refuses the run at once.",
    "epochs": "Train up to this many epochs in all; raise it to train a finished run more.",
}


@dataclass(frozen=True)
class FormField:
    """One input of a form, as the API's JSON schema describes its field."""

    #: The field's JSON path, dotted: ``hyperparameters.epochs``.
    name: str
    label: str
    #: ``number``, ``select``, ``checkbox`` or ``text``.
    kind: str
    default: Any = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    #: A bound the value must stay above (``exclusiveMinimum``): not an input attribute.
    above: float | None = None
    #: ``1`` for an integer, ``any`` for a real number.
    step: str | None = None
    max_length: int | None = None
    choices: tuple[str, ...] = ()
    help: str = ""
    attrs: dict[str, str] = field(default_factory=dict)

    @property
    def dom_id(self) -> str:
        """Its id in the page, as the error fragment names it: ``error-<dom_id>``."""
        return dom_id(self.name)

    @property
    def value(self) -> str:
        """The default as an input's value (nothing for no default)."""
        if self.default is None or isinstance(self.default, bool):
            return ""
        return str(self.default)

    @property
    def range_text(self) -> str:
        """``1 to 1000 · default 10``, as the help line shows the bounds."""
        parts = []
        if self.above is not None:
            high = f", at most {_num(self.maximum)}" if self.maximum is not None else ""
            parts.append(f"above {_num(self.above)}{high}")
        elif self.minimum is not None and self.maximum is not None:
            parts.append(f"{_num(self.minimum)} to {_num(self.maximum)}")
        elif self.minimum is not None:
            parts.append(f"at least {_num(self.minimum)}")
        elif self.maximum is not None:
            parts.append(f"at most {_num(self.maximum)}")
        if self.max_length is not None and not self.choices:
            parts.append(f"up to {self.max_length} characters")
        if self.default is not None:
            parts.append(f"default {self.value or self.default}")
        elif not self.required:
            parts.append("optional")
        return " · ".join(parts)


def _num(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,}" if abs(value) >= 10**6 else f"{value:g}"


def form_fields(model: type[BaseModel], skip: frozenset[str] = frozenset()) -> list[FormField]:
    """Every field of ``model`` (nested models flattened to dotted names) as a form input."""
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    required = set(schema.get("required", ()))
    fields: list[FormField] = []
    for name, prop in schema.get("properties", {}).items():
        if name in skip:
            continue
        prop = _resolved(prop, defs)
        if prop.get("type") == "object" and "properties" in prop:
            for sub, subprop in prop["properties"].items():
                inner = set(prop.get("required", ()))
                fields.append(_field(f"{name}.{sub}", _resolved(subprop, defs), sub in inner))
        else:
            fields.append(_field(name, prop, name in required))
    return fields


def _resolved(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """``prop`` with its ``$ref`` followed and ``X | None`` narrowed to ``X`` (its default and
    title kept)."""
    if "$ref" in prop:
        prop = defs[prop["$ref"].rsplit("/", 1)[-1]] | {
            k: v for k, v in prop.items() if k != "$ref"
        }
    options = [o for o in prop.get("anyOf", ()) if o.get("type") != "null"]
    if len(options) == 1:
        rest = {k: v for k, v in prop.items() if k != "anyOf"}
        prop = _resolved(options[0], defs) | rest
    return prop


def _field(name: str, prop: dict[str, Any], required: bool) -> FormField:
    kind_of = {"integer": "number", "number": "number", "boolean": "checkbox"}
    choices = tuple(prop.get("enum", ())) or OPEN_CHOICES.get(name, ())
    kind = "select" if choices else kind_of.get(prop.get("type", ""), "text")
    title = str(prop.get("title") or name.rsplit(".", 1)[-1])
    return FormField(
        name=name,
        label=title[:1].upper() + title[1:].lower(),
        kind=kind,
        default=prop.get("default"),
        required=required,
        minimum=prop.get("minimum"),
        maximum=prop.get("maximum"),
        above=prop.get("exclusiveMinimum"),
        step={"integer": "1", "number": "any"}.get(prop.get("type", "")),
        max_length=prop.get("maxLength"),
        choices=choices,
        help=str(prop.get("description") or HINTS.get(name, "")),
    )


#: The run form's fields and the resume form's, read once from the API's models.
RUN_FIELDS: Final = tuple(form_fields(RunSubmit, SET_BY_PAGE))
RESUME_FIELDS: Final = tuple(form_fields(ResumeIn))


@router.get("/projects/{project_id}/training")
async def training_page(
    request: Request,
    project_id: PathId,
    principal: PageUser,
    gateway: GatewayDep,
    run: MaybeQueryId = None,
) -> Response:
    """The training page of a project; ``?run=`` selects one of its runs."""
    hyper = [f for f in RUN_FIELDS if f.name.startswith("hyperparameters.")]
    other = [f for f in RUN_FIELDS if not f.name.startswith("hyperparameters.")]
    return await project_page(
        request,
        gateway,
        principal,
        project_id,
        "training.html",
        "training",
        hyper_fields=hyper,
        run_fields=other,
        resume_fields=RESUME_FIELDS,
        selected=run or "",
    )
