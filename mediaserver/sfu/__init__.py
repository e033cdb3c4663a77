"""sfu (see ../shared/DESIGN.md)."""
