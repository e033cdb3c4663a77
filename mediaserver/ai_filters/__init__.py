"""Opt-in video effects: built by the effects issue; empty until then."""
