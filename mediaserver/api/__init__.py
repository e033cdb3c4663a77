"""REST for profiles and privacy requests under /api/v1 (docs: GET /api/v1/docs)."""

from mediaserver.api.processing import background_tasks
from mediaserver.api.routes import create_api
from mediaserver.api.wire import PREFIX

__all__ = ["PREFIX", "background_tasks", "create_api"]
