"""Sphinx configuration for the nsprov user guide (built with -W -n in CI)."""

from importlib.metadata import version as _version

project = "nsprov"
author = "nsprov developers"
copyright = "2026, nsprov developers"  # noqa: A001
release = _version("nsprov")
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
]
source_suffix = {".md": "markdown"}
master_doc = "index"
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
html_theme = "furo"
html_title = "nsprov"
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
intersphinx_mapping: dict[str, tuple[str, None]] = {}
nitpick_ignore_regex = [
    (r"py:.*", r"(collections\.abc|typing|os)\..*"),
    (r"py:.*", r"(Config|MailUser|Mapping|Sequence|Callable|NoReturn|Login|Plan|Discovery|Namespace)"),
    (r"py:.*", r"nsprov\._.*"),
]
