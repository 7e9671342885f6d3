"""Sphinx configuration of the documentation: ``sphinx-build -W --keep-going docs docs/_build/html``.

Built offline: no intersphinx inventories are fetched; links to skorch, scikit-learn, modAL,
torch and Dask are written as plain URLs (:data:`extlinks`).
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the benchmarks package, which some pages mention

import tidal_modal  # noqa: E402

project = "tidal-modal"
author = "the tidal-modal developers"
copyright = "2026, the tidal-modal developers"
release = version = tidal_modal.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.extlinks",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = [
    "_build",
    "sg_execution_times.rst",
    "auto_examples/sg_execution_times.rst",
    "auto_examples/*.ipynb",
    "auto_examples/*.py",
    "auto_examples/*.zip",
]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

autosummary_generate = True
autodoc_typehints = "none"  # numpydoc's Parameters sections say the types, in words
autodoc_default_options = {"members": True, "inherited-members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

extlinks = {
    "skorch": ("https://skorch.readthedocs.io/en/stable/%s", "%s"),
    "sklearn": ("https://scikit-learn.org/stable/%s", "%s"),
    "modal": ("https://modal-python.readthedocs.io/en/latest/%s", "%s"),
    "torch": ("https://pytorch.org/docs/stable/%s", "%s"),
    "dask": ("https://docs.dask.org/en/stable/%s", "%s"),
}

html_theme = "pydata_sphinx_theme"
html_title = f"tidal-modal {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    # nothing fetched at build or view time
    "icon_links": [],
}
html_static_path = []
templates_path = ["_templates"]

plot_gallery = os.environ.get("TIDAL_MODAL_DOCS_GALLERY", "True")
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"(digits_loop|skactiveml_loop)\.py",
    "plot_gallery": plot_gallery,
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "within_subsection_order": "FileNameSortKey",
    # its page trips Sphinx's table of contents (KeyError: 'anchorname') and says little
    "write_computation_times": False,
}
