"""The README's code blocks run as written (``doc_blocks``: Python, doctests and shell lines,
top to bottom in a fresh folder); a block that installs packages or runs the whole suite says so
and is reported as skipped."""

import pytest
from doc_blocks import ROOT, blocks, run_page

README = ROOT / "README.md"
MARKED = [b for b in blocks(README) if b.skipped]


def test_every_readme_block_runs_as_written(tmp_path):
    ran = run_page(README, tmp_path)
    assert len(ran) == len(blocks(README)) - len(MARKED) >= 3
    assert (tmp_path / "results.parquet").is_file()  # the command line block wrote its rows


@pytest.mark.parametrize("block", MARKED, ids=[b.where for b in MARKED])
def test_a_readme_block_that_is_not_run_says_why(block):
    pytest.skip(f"{block.where}: {block.skipped}")


def test_the_readme_commands_are_the_ones_ci_and_the_extras_tests_run():
    commands = [b.code.strip().splitlines()[-1] for b in MARKED if "nox" in b.code or
                "probhook demo" in b.code]  # fmt: skip
    assert commands == [
        'python3 -m venv .venv && .venv/bin/pip install -q -c constraints.txt ".[all]" '
        "&& .venv/bin/probhook demo",
        "python3 -m venv .venv && .venv/bin/pip install -q nox && .venv/bin/nox -s tests",
    ]
    assert commands[1] in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_quickstart_example_runs(capsys):
    import runpy

    runpy.run_path(str(ROOT / "examples" / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "top-3 from probhook" in out
    assert "mean over 3 pages" in out


def test_links_are_absolute_so_that_they_work_on_a_package_index_page():
    import re

    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)]+)\)", text) + re.findall(r"<(https?://[^>]+)>", text)
    assert links
    assert [link for link in links if not link.startswith("https://")] == []
