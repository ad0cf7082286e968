"""t2i: a self-hosted text-to-image service (docs/ARCHITECTURE.md has the floor plan)."""

__version__ = "0.1.0"
