"""The example notebook runs end to end, and every public name is documented."""

import inspect
from pathlib import Path

import nbformat
from nbclient import NotebookClient

import probhook

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_example_notebook_executes(tmp_path):
    nb = nbformat.read(DOCS / "example.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("rows kept of capacity 1000" in h for h in html)


def test_every_public_name_has_a_docstring():
    for name in probhook.__all__:
        obj = getattr(probhook, name)
        assert inspect.getdoc(obj), name
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and callable(member):
                    assert inspect.getdoc(member), f"{name}.{attr}"
