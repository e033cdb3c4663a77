"""The random-match queue: built by the matchmaker issue; empty until then."""
