"""Plain helpers shared by tests in several folders (pytest fixtures live in the conftest.py files instead)."""
