"""The operator HTTP API and web console (FastAPI)."""

from workers.api.app import create_app

__all__ = ["create_app"]
