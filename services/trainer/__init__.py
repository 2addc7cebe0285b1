"""The trainer service: owns the Run aggregate, holds a device lease, trains with torch."""
