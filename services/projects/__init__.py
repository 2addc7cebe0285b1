"""The projects service: owns the Project aggregate (``domain``), decides commands
(``handlers``) and runs as its own process (``app``)."""
