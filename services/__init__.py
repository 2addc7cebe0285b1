"""AI Studio's services: ``kernel`` (shared infrastructure) and one package per context."""
