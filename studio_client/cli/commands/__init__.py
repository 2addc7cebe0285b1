"""The ``studio`` command's user commands, one module per part of the journey."""
