"""REST for profiles and privacy requests under /api/v1 (docs: GET /api/v1/docs)."""

from mediaserver.api.routes import PREFIX, background_tasks, create_api

__all__ = ["PREFIX", "background_tasks", "create_api"]
