"""Vision parts shared by the trainer and the exporter: the model zoo and the preprocessing an
image gets before a model sees it (the same at evaluation, export and prediction)."""
