"""Command handlers of the experiments: create, stop, resume a search, promote a trial.

The search itself is the driver's (``experiment_driver``): these handlers only decide and
store the experiment's own facts; the driver reacts to them. Promoting a trial asks for an
evaluation of its run on the test subset (this service's own handler, in-process) and an export
(the exporter's command, over NATS) under the ids the caller chose, then records the promotion,
so a retried promote with the same ids is answered the same. Imports ``contracts``, the kernel
and the trainer's domain only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, Protocol

from contracts import common
from contracts import experiments as x
from contracts import exports as e
from contracts import training as c
from contracts.common import CommandAccepted, CommandRejected, Reply
from services.kernel.commands import execute, rejected
from services.kernel.domain import DomainError
from services.kernel.repository import Repository
from services.trainer.domain import experiment as domain

_REFUSALS = (DomainError,)

#: A command handler of this service, called in-process (the driver and promote use them).
Handler = Callable[[Any, Mapping[str, str]], Awaitable[Reply]]


class SendCommand(Protocol):
    """Sends a command to another service and returns its reply (an UNAVAILABLE refusal when
    that service does not answer)."""

    async def __call__(self, subject: str, command: Any, headers: Mapping[str, str]) -> Reply: ...


class Experiments:
    def __init__(
        self,
        experiments: Repository[domain.State],
        *,
        evaluate_run: Handler,
        send: SendCommand,
    ) -> None:
        self.repo = experiments
        self.evaluate_run = evaluate_run
        self.send = send

    async def create_experiment(
        self, command: x.CreateExperiment, headers: Mapping[str, str]
    ) -> Reply:
        decide = partial(domain.create, command=command)
        return await self._execute(command, command.experiment_id, decide, headers)

    async def stop_experiment(self, command: x.StopExperiment, headers: Mapping[str, str]) -> Reply:
        decide = partial(domain.stop, command=command)
        return await self._execute(command, command.experiment_id, decide, headers)

    async def resume_experiment(
        self, command: x.ResumeExperiment, headers: Mapping[str, str]
    ) -> Reply:
        decide = partial(domain.resume, command=command)
        return await self._execute(command, command.experiment_id, decide, headers)

    async def promote_trial(self, command: x.PromoteTrial, headers: Mapping[str, str]) -> Reply:
        if command.format not in e.FORMATS:
            return CommandRejected(
                code=common.VALIDATION_ERROR,
                message=f"format must be one of {', '.join(e.FORMATS)}",
                field="format",
            )
        try:
            state = (await self.repo.load(command.experiment_id)).state
            trial = domain.promotable(state, command)
        except DomainError as err:
            return rejected(err)
        except ValueError:  # not an id: no such experiment
            return CommandRejected(code=common.NOT_FOUND, message="that experiment does not exist")
        refused = await self._evaluate_and_export(command, trial.run_id, headers)
        if refused is not None:
            return refused
        decide = partial(domain.promote, command=command)
        return await self._execute(command, command.experiment_id, decide, headers)

    async def _evaluate_and_export(
        self, command: x.PromoteTrial, run_id: str, headers: Mapping[str, str]
    ) -> CommandRejected | None:
        """Both jobs asked for; a job already started under its id (a retried promote) is fine."""
        evaluate = c.EvaluateRun(
            evaluation_id=command.evaluation_id,
            run_id=run_id,
            checkpoint="best",
            subset="test",
            correlation_id=command.correlation_id,
            actor=command.actor,
        )
        reply = await self.evaluate_run(evaluate, headers)
        if _refused(reply):
            return _on_field(reply, "evaluation_id")
        export = e.RequestExport(
            export_id=command.export_id,
            run_id=run_id,
            checkpoint="best",
            format=command.format,
            correlation_id=command.correlation_id,
            actor=command.actor,
        )
        reply = await self.send(e.Subjects.REQUEST_EXPORT, export, headers)
        if _refused(reply):
            return _on_field(reply, "export_id")
        return None

    async def _execute(
        self,
        command: x.Command,
        experiment_id: str,
        decide: Callable[[domain.State], list[x.Event]],
        headers: Mapping[str, str],
    ) -> Reply:
        return await execute(
            self.repo,
            experiment_id,
            command,
            decide,
            headers=headers,
            refusals=_REFUSALS,
            noun="experiment",
        )


def _refused(reply: Reply) -> bool:
    """A refusal, other than the job existing already (a promote sent again)."""
    if not isinstance(reply, CommandRejected):
        return False
    return not (reply.code == common.CONFLICT and "already" in reply.message)


def _on_field(reply: Reply, field: str) -> CommandRejected:
    assert isinstance(reply, CommandRejected)
    if reply.field is not None or reply.code != common.CONFLICT:
        return reply
    return CommandRejected(code=reply.code, message=reply.message, field=field)


def accepted(reply: Reply) -> bool:
    return isinstance(reply, CommandAccepted)
