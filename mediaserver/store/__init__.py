"""SQLite storage and retention: built by the REST issue; empty until then."""
