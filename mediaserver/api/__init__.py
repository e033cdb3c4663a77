"""REST for profiles and privacy requests: built by the REST issue; empty until then."""
