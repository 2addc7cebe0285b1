"""The ``studio`` command line for users (click + rich), on ``studio_client``.

    studio login --url http://127.0.0.1:8000 --user admin
    studio import birds ./birds.zip
    studio train birds --epochs 10 --follow

``cli`` is the click group; ``build(*extra)`` makes one with more commands beside (the
operator's ``up``, ``ping`` and ``rebuild`` of ``services.cli``); ``main`` runs it.
"""

from studio_client.cli.app import build, cli, main

__all__ = ["build", "cli", "main"]
