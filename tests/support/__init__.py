"""Helpers shared by several test directories (importable as ``tests.support.*``: setup.cfg sets
pytest's ``pythonpath = .``; conftest modules cannot be imported by name under importlib mode)."""
