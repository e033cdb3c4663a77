"""mediaserver: a realtime media server for anonymous random video chat."""

__version__ = "0.1.0"
