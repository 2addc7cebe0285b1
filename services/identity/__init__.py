"""The identity service: owns the User aggregate with its sessions and API keys (``domain``),
decides commands (``handlers``), seals passwords (``passwords``) and runs as its own process
(``app``)."""
