"""Shared infrastructure: settings, NATS wiring, event store, projections, telemetry.

May import ``contracts`` and third-party libraries; never a context package.
"""
