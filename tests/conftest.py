import pytest

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
