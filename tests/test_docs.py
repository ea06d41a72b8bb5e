"""The documentation: the site builds strictly, the API page renders examples as code and
cross-references as links, every public name is documented, and the example notebook runs on the
demo model with plots in its outputs."""

import importlib
import inspect
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import probhook

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(ROOT / "scripts"))
import doc_blocks  # noqa: E402  (tests/, beside this file)
import docstring_syntax  # noqa: E402

ROLE = re.compile(r":(class|meth|func|mod|data|attr|exc|obj):`")
PAGES = sorted(DOCS.glob("*.md"))
MARKED = [b for page in PAGES for b in doc_blocks.blocks(page) if b.skipped]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_code_block_of_the_page_runs_as_written(page, tmp_path):
    """Top to bottom in a fresh folder, as a reader would (see ``doc_blocks``)."""
    ran = doc_blocks.run_page(page, tmp_path)
    own = [b for b in doc_blocks.blocks(page) if not b.skipped]
    assert set(ran) >= {b.where for b in own}


@pytest.mark.parametrize("block", MARKED, ids=[b.where for b in MARKED])
def test_a_block_that_is_not_run_says_why(block):
    pytest.skip(f"{block.where}: {block.skipped}")


def test_every_fence_is_code_that_runs_or_marked_output():
    """A block in another language (``sh``, ``console``, none) would be passed over silently."""
    for page in [*PAGES, ROOT / "README.md"]:
        text = page.read_text(encoding="utf-8")
        languages = re.findall(r"^```(\w*)[^\n]*\n.*?^```", text, re.M | re.S)
        assert set(languages) <= {*doc_blocks.RUN, "text"}, (page.name, languages)


def test_code_lines_scroll_instead_of_wrapping():
    """Aligned comments (the install block) keep their columns; long lines scroll."""
    css = (DOCS / "css" / "extra.css").read_text(encoding="utf-8")
    assert "pre-wrap" not in css
    assert "overflow-wrap: anywhere" not in css
    assert re.search(r"pre > code \{[^}]*white-space: pre;[^}]*overflow-x: auto", css)


def test_example_notebook_executes_with_plots(tmp_path):
    nb = nbformat.read(DOCS / "example.ipynb", as_version=4)
    sources = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    assert "matplotlib.use" not in sources  # plots show inline in Jupyter
    assert "demo.MODEL_DIR" in sources
    assert "analyzer_from_folder" in sources
    # every code line fits the page's column at 1280 px (longer ones would scroll sideways)
    assert max(len(line) for line in sources.splitlines()) <= 70
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("13 rows, mean confidence" in h and "flagged" in h for h in html)
    assert any("ambiguous_invoice_as_letter.pdf p.1" in h for h in html)  # not the page's UUID
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 7  # confidence, margin, class means, page, reliability, confusion, r-c


def test_saved_notebook_has_its_outputs():
    """The site shows the notebook as saved: it must carry the outputs of a run."""
    nb = nbformat.read(DOCS / "example.ipynb", as_version=4)
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 7
    assert not [o for o in outputs if o.output_type == "error"]


def _documented_names():
    """Every public function, class, method and property of the modules on the API page."""
    targets = re.findall(r"^::: (\S+)", (DOCS / "api.md").read_text(encoding="utf-8"), re.M)
    for target in targets:
        module_name, _, attr = target.rpartition(".")
        try:
            obj = importlib.import_module(target)
        except ModuleNotFoundError:
            obj = getattr(importlib.import_module(module_name), attr)
        yield target, obj
        members = vars(obj).items() if inspect.ismodule(obj) or inspect.isclass(obj) else []
        for name, member in members:
            if name.startswith("_"):
                continue
            home = getattr(member, "__module__", "") or ""
            if inspect.ismodule(obj) and not home.startswith(obj.__name__):
                continue  # imported from elsewhere: documented there
            if inspect.isfunction(member) or isinstance(member, property):
                yield f"{target}.{name}", member
            elif inspect.isclass(member):
                yield f"{target}.{name}", member
                for attr_name, attr in vars(member).items():
                    if not attr_name.startswith("_") and (
                        inspect.isfunction(attr) or isinstance(attr, property)
                    ):
                        yield f"{target}.{name}.{attr_name}", attr


def test_every_public_name_on_the_api_page_has_a_docstring():
    missing = [name for name, obj in _documented_names() if not inspect.getdoc(obj)]
    assert missing == []
    names = {name for name, _ in _documented_names()}
    for method in ("confidence", "uncertainty", "reliability", "confusion", "risk_coverage"):
        assert f"probhook.plots.Plotter.{method}" in names
    for name in probhook.__all__:
        assert inspect.getdoc(getattr(probhook, name)), name


def test_docs_build_strictly_with_code_examples_and_links(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    assert not ROLE.search(api)
    prompts = api.count("&gt;&gt;&gt;")
    assert prompts > 50
    assert api.count('<span class="gp">&gt;&gt;&gt; </span>') == prompts  # all in code blocks
    assert not re.search(r"<blockquote>\s*<p>&gt;&gt;&gt;", api)
    assert 'href="#probhook.sink.FileSink"' in api  # a cross-reference became a link
    assert 'id="probhook.plots.Plotter.risk_coverage"' in api
    notebook = (site / "example" / "index.html").read_text(encoding="utf-8")
    assert notebook.count("data:image/png;base64") >= 7  # the plots, rendered in the page
    assert "ambiguous_invoice_as_letter.pdf p.1" in notebook


def test_package_docstrings_need_no_conversion():
    assert docstring_syntax.main(["--check", str(ROOT / "probhook")]) == 0


def test_docstring_syntax_converts_roles_examples_and_literal_blocks(tmp_path):
    source = textwrap.dedent('''\
        """Rows, see :class:`~probhook.sink.FileSink` and :mod:`probhook._torch`.

        >>> 1 + 1
        2

        >>> print("x")
        x

        Use it like this::

            cap.start()
        """


        def f(a):
            """Like :meth:`get` on :class:`probhook.HeadView`, long enough to wrap here ok.

            Args:
                a: the :data:`QUEUE_ROWS` rows, see :func:`probhook.load` and :attr:`Capture.heads`
                    x.

            Examples:
                >>> f(1)
            """
            return ":class:`not a docstring`"
        ''')
    converted = docstring_syntax.convert_source(source, width=88)
    assert converted == textwrap.dedent('''\
        """Rows, see [`FileSink`][probhook.sink.FileSink] and ``probhook._torch``.

        Examples:
            >>> 1 + 1
            2

            >>> print("x")
            x

        Use it like this:

            cap.start()
        """


        def f(a):
            """Like [`get`][get] on [`probhook.HeadView`][probhook.HeadView], long enough to
            wrap here ok.

            Args:
                a: the [`QUEUE_ROWS`][QUEUE_ROWS] rows, see [`probhook.load`][probhook.load] and
                    [`Capture.heads`][Capture.heads] x.

            Examples:
                >>> f(1)
            """
            return ":class:`not a docstring`"
        ''')
    assert docstring_syntax.convert_source(converted, width=88) == converted  # idempotent
    path = tmp_path / "mod.py"
    path.write_text(source, encoding="utf-8")
    assert docstring_syntax.main(["--check", str(path)]) == 1
    assert docstring_syntax.main([str(path)]) == 0
    assert path.read_text(encoding="utf-8") == docstring_syntax.convert_source(source)
    import doctest

    assert doctest.testmod(docstring_syntax).failed == 0


@pytest.mark.parametrize("width", [100])
def test_converted_lines_fit(width):
    for path in (ROOT / "probhook").rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "][" in line:
                assert len(line) <= width, f"{path}:{number}"


def test_the_elements_page_examples_run(capsys):
    """docs/elements.md: its ``python`` blocks run in order, in one namespace, and print what
    the page says (a block marked as not run illustrates what needs a real analyzer)."""
    page = DOCS / "elements.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S)
    namespace: dict = {}
    for block in [b for b in blocks if not b.startswith(doc_blocks.MARK)]:
        exec(compile(block, str(page), "exec"), namespace)
    out = capsys.readouterr().out
    assert re.search(r"table at \[.*\] \(0\.\d\d\): \d+ cells, \d+ to check", out)
    assert "confidence" in out
    assert "p_no_object" in out
    assert len(namespace["flagged"]) == len(namespace["rows"])
