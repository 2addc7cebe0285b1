"""The bookkeeping every reader shares: what each image was said to be, and the manifest and
problems that come of it.

An image named with two labels, or in two splits, becomes a label problem rather than a guess.
For a detection project (``detection=True``) an image keeps every box whatever their classes:
its label is the class with the most boxes (ties: the first by name), and an image with no
box is a negative, kept with the label ``""``; an image with a bad box (``reject``) is left
out as a label problem naming the box, so that no object of it is silently taken for
background, and the rest are imported.
Pure: imports the standard library and ``manifest`` and ``tree`` beside it; reads no file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from services.datasets.formats.manifest import Box, Entry, FormatError, Manifest, Problem
from services.datasets.formats.tree import File, Tree

_MAX_LISTED = 20
#: Boxes an image may have (a detection image's record must fit one NATS message).
MAX_BOXES = 10_000


@dataclass
class _Seen:
    file: File
    labels: list[str] = field(default_factory=list)
    splits: list[str | None] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)


class Labels:
    """What each image was said to be, so that a conflict becomes a label problem, not a guess."""

    def __init__(
        self, none: str, several: Callable[[list[str]], str], *, detection: bool = False
    ) -> None:
        self._none = none
        self._several = several
        self.detection = detection
        self._seen: dict[str, _Seen] = {}

    def __contains__(self, file: File) -> bool:
        return file.name in self._seen

    def add(
        self, file: File, split: str | None, label: str | None = None, box: Box | None = None
    ) -> None:
        seen = self._seen.setdefault(file.name, _Seen(file))
        if split not in seen.splits:
            seen.splits.append(split)
        if label and label not in seen.labels:
            seen.labels.append(label)
        if box is not None:
            seen.boxes.append(box)

    def reject(self, file: File, split: str | None, reason: str) -> None:
        """A bad box or line of ``file`` (detection): the image is left out, with why."""
        self.add(file, split)
        self._seen[file.name].rejected.append(reason)

    def result(self) -> tuple[list[Entry], list[Problem]]:
        entries: list[Entry] = []
        problems: list[Problem] = []
        for seen in self._seen.values():
            reason = self._detection_problem(seen) if self.detection else self._problem(seen)
            if reason is not None:
                problems.append(Problem(seen.file.name, reason))
            else:
                file, label, split = seen.file, self._label(seen), seen.splits[0]
                entries.append(Entry(file.path, file.name, label, split, tuple(seen.boxes)))
        return entries, problems

    def _label(self, seen: _Seen) -> str:
        if not self.detection:
            return seen.labels[0]
        if seen.boxes:
            counts = Counter(box.label for box in seen.boxes)
            return min(counts, key=lambda label: (-counts[label], label))
        return seen.labels[0] if seen.labels else ""  # "": a negative, an image with no box

    def _detection_problem(self, seen: _Seen) -> str | None:
        if len(seen.boxes) > MAX_BOXES:
            return f"{len(seen.boxes)} boxes: an image may have at most {MAX_BOXES}"
        if seen.rejected:
            more = len(seen.rejected) - 3
            return "; ".join(seen.rejected[:3]) + (f" (and {more} more)" if more > 0 else "")
        if len(seen.splits) > 1:
            return f"listed in splits {and_list([split or 'none' for split in seen.splits])}"
        return None

    def _problem(self, seen: _Seen) -> str | None:
        if not seen.labels:
            return self._none
        if len(seen.labels) > 1:
            return self._several(seen.labels)
        if len(seen.splits) > 1:
            return f"listed in splits {and_list([split or 'none' for split in seen.splits])}"
        return None


def to_manifest(fmt: str, tree: Tree, labels: Labels, skipped: list[Problem]) -> Manifest:
    """The manifest of what labels accepted, with the skipped files and the walk's refusals."""
    entries, problems = labels.result()
    entries.sort(key=lambda entry: entry.name)
    return Manifest(
        format=fmt,
        entries=entries,
        classes=sorted(
            {entry.label for entry in entries if entry.label}
            | {box.label for entry in entries for box in entry.boxes}
        ),
        skipped=sorted_problems([*skipped, *tree.refused]),
        label_problems=sorted_problems(problems),
        count=len(entries),
    )


def sorted_problems(problems: list[Problem]) -> list[Problem]:
    """Problems in report order: by file, then reason."""
    return sorted(problems, key=lambda problem: (problem.file, problem.reason))


def several(kind: str) -> Callable[[list[str]], str]:
    """The label problem of an image given more than one of `kind`."""
    return lambda labels: f"several {kind}: {', '.join(sorted(labels))}"


def left_out(file: File, why: str) -> Problem:
    """Why a file is not imported: `why` for an image, its type for anything else."""
    return Problem(file.name, why) if file.is_image else unsupported(file)


def unsupported(file: File) -> Problem:
    return Problem(file.name, f"unsupported file type {file.suffix or '(no extension)'}")


def missing(names: list[str], where: str) -> FormatError:
    """The refusal of a label file that names files the walk did not find."""
    unique = list(dict.fromkeys(names))
    shown = ", ".join(unique[:_MAX_LISTED])
    more = f" and {len(unique) - _MAX_LISTED} more" if len(unique) > _MAX_LISTED else ""
    message = f"{len(unique)} file(s) named in {where} were not found: {shown}{more}"
    return FormatError(message, code="MISSING_FILES")


def and_list(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
