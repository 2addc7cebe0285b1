"""Vision parts shared by the trainer and the exporter: the model zoo (``models``) and the
preprocessing an image gets before a model sees it (``preprocess``), the same at evaluation,
export and prediction so the three cannot drift.

Its own package, not the kernel's, so that the kernel and the services that never see a tensor
(projects, datasets, gateway) import no torch. Imports torch, torchvision, Pillow and numpy
only; never NATS, SQL or another ``services`` package. Used only by ``services.trainer`` and
``services.exporter`` (``tests/unit/test_layers.py`` holds both rules).
"""
