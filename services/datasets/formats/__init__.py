"""Reads a dataset laid out as class folders, a CSV, COCO JSON or YOLO labels into a ``Manifest``:
the images to import with their label, split and boxes, and the files left out and why.

A pure library of the datasets service, one module per format (``folder``, ``csvfile``,
``coco``, ``yolo``) over shared pieces: ``tree`` (the one walk of the source and what it
refuses), ``labels`` (what each image was said to be, conflicts as label problems),
``manifest`` (the values and ``FormatError``) and ``detect`` (format detection and dispatch).

Import rules: the standard library, yaml, and ``services.datasets.sources`` (for
``SourceError``) only; never NATS, SQL, asyncio or another ``services`` package. It reads the
given source tree and nothing else, and opens no image (decoding is the import job's work).
Callers import from this package, not from its modules.
"""

from services.datasets.formats.detect import detect, read_manifest
from services.datasets.formats.manifest import Box, Entry, FormatError, Manifest, Problem

__all__ = [
    "Box",
    "Entry",
    "FormatError",
    "Manifest",
    "Problem",
    "detect",
    "read_manifest",
]
