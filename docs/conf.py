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
    (
        r"py:.*",
        r"(Config|MailUser|Mapping|Sequence|Callable|NoReturn|Login|Plan|Discovery|Namespace)",
    ),
    (r"py:.*", r"nsprov\._.*"),
    # Internal names the docstrings of the API mention (the module's helpers), and napoleon
    # reading "2.4: ..." in an attribute comment as a type.
    (r"py:.*", r"_\w+|Step|read_acl|default_reply_budget|[RWX]_OK|2\.4"),
]


def _public_name(app, env, node, contnode):
    """Resolve a bare ``ConfigError`` or ``Config`` in a docstring to the public name."""
    import nsprov  # noqa: PLC0415
    import nsprov.exceptions  # noqa: PLC0415

    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or "." in target:
        return None
    if target in nsprov.exceptions.__all__:
        qualified = f"nsprov.exceptions.{target}"
    elif target in nsprov.__all__:
        qualified = f"nsprov.{target}"
    else:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], qualified, node, contnode
    )


def setup(app):
    """Connect the resolver of bare public names."""
    app.connect("missing-reference", _public_name)
