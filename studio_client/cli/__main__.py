"""``python -m studio_client.cli``: the user commands of ``studio``, without the services."""

from studio_client.cli.app import main

if __name__ == "__main__":
    main()
