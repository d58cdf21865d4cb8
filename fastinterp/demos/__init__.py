"""Sections of ``python -m fastinterp demo`` (see fastinterp.demo)."""
