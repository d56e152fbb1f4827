"""Fixtures for the tests of ``nsprov serve``: ``base`` and ``spool`` (see :mod:`tests.serve.helpers`)."""

from __future__ import annotations

from .helpers import _base, _spool  # noqa: F401 - the base and spool fixtures
