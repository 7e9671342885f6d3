"""The documentation: every public name documented (numpydoc), every snippet of the README and the
docs runs as written, and the built site's local links and images resolve."""

import importlib
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: The public API: every name here has an entry in docs/api.rst and a complete docstring.
PUBLIC = {
    "tidal_modal": importlib.import_module("tidal_modal").__all__,
    "tidal_modal.batch": ["ranked_batch", "tidal_ranked_batch"],
    "tidal_modal.dask": ["dask_top_k"],
    "tidal_modal.accelerate": ["AcceleratedTiDALNetClassifier", "DistributedTrainingDynamics"],
    "tidal_modal.skactiveml": ["DISALSampling", "TiDALSampling"],
    "tidal_modal.stopping": [
        "StabilizingPredictions", "OverallUncertainty", "TDDisagreement", "StoppingDecision"
    ],  # fmt: skip
    "tidal_modal.modules": ["TDHead", "FeatureTap", "attach_taps", "unwrap"],
    "tidal_modal.trajectory": ["Trajectory"],
    "tidal_modal.dynamics": ["TrainingDynamics"],
}
NAMES = [f"{module}.{name}" for module, names in PUBLIC.items() for name in names]

#: numpydoc's checks that a user relies on: a docstring, its parameters, what it returns, an example
CHECKS = {"GL08", "PR01", "PR02", "RT01", "EX01"}


@pytest.mark.parametrize("name", NAMES)
def test_every_public_name_has_a_complete_docstring(name):
    validate = pytest.importorskip("numpydoc.validate").validate
    result = validate(name)
    errors = [(code, message) for code, message in result["errors"] if code in CHECKS]
    if result["type"] == "type":  # a class "returns" nothing
        errors = [(code, message) for code, message in errors if code != "RT01"]
    assert not errors, errors


def test_every_public_name_has_an_api_entry():
    api = (DOCS / "api.rst").read_text()
    entries = set(re.findall(r"^   ([\w.]+)$", api, re.M))
    missing = [name for name in NAMES if name.removeprefix("tidal_modal.") not in entries]
    assert not missing, f"not in docs/api.rst: {missing}"


# --- snippets ---------------------------------------------------------------------------------

PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
SKIP = "# not run:"  # first line of a block that needs what a test cannot give (a GPU, torchrun)


def python_blocks(page):
    """The ``python`` code blocks of a Markdown page, in order, without the ones marked not run."""
    blocks = re.findall(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M)
    return [block for block in blocks if not block.startswith(SKIP)]


@pytest.mark.parametrize(
    "page", [p for p in PAGES if python_blocks(p)], ids=lambda p: str(p.relative_to(ROOT))
)
def test_the_snippets_of_a_page_run_as_written(page, tmp_path):
    """A page's blocks run one after another in one fresh interpreter, as a reader would paste them."""
    script = "\n\n".join(python_blocks(page))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]


# --- the built site ---------------------------------------------------------------------------


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.targets = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("href", "src"):
            if attrs.get(key) and tag in ("a", "img", "link", "script"):
                self.targets.append((tag, attrs[key]))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built as CI builds it, less the gallery's execution (CI executes it separately)."""
    pytest.importorskip("sphinx")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "TIDAL_MODAL_DOCS_GALLERY": "0", "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-6000:]
    return out


def test_every_local_link_and_image_of_the_site_resolves(site):
    broken = []
    pages = [page for page in site.rglob("*.html") if "_static" not in page.parts]  # not the theme's macros
    assert len(pages) > 20
    for page in pages:
        parser = _Links()
        parser.feed(page.read_text())
        for tag, target in parser.targets:
            url = urlparse(target)
            if url.scheme or target.startswith(("#", "mailto:", "//")):
                continue
            path = (page.parent / unquote(url.path)).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(site)}: <{tag}> {target}")
    assert not broken, "\n".join(broken[:50])


def test_the_api_reference_lists_every_public_name(site):
    generated = {path.stem for path in (site / "generated").glob("*.html")}
    missing = [name for name in NAMES if f"tidal_modal.{name.removeprefix('tidal_modal.')}" not in generated]
    assert not missing, missing


def test_help_shows_the_names_of_type_aliases_not_their_expansions():
    """Signatures read ``X: 'InputData'``, not numpy's ~600-character array-like unions."""
    import pydoc

    import tidal_modal

    text = pydoc.render_doc(tidal_modal.TiDALNetClassifier.predict_td, renderer=pydoc.plaintext)
    assert "InputData" in text and "_SupportsArray" not in text
