"""``python -m nsprov``."""

from ._main import entrypoint

if __name__ == "__main__":  # pragma: no branch
    entrypoint()
