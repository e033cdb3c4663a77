"""WebSocket signalling: built by the signalling issue; empty until then."""
