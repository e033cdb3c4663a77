import asyncio

import pytest
import uvloop

from mediaserver import netns


@pytest.fixture(autouse=True)
def _require_netns(request):
    # Tests with real WebRTC peers must run in the private namespace; outside it
    # they fail loudly (never skip, never touch the LAN).
    if request.node.get_closest_marker("netns") and not netns.inside():
        pytest.fail(
            "needs the private network namespace: run `make test` "
            "or `python -m mediaserver.netns -- pytest`"
        )


def pytest_asyncio_loop_factories(config, item):
    if item.get_closest_marker("both_loops"):
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}
