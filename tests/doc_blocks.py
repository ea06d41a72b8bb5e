"""Run the code blocks of a Markdown page as written, top to bottom, as a reader would.

- ```` ```python ```` blocks run in one namespace per page (a block may use what an earlier one
  made); ```` ```pycon ```` blocks are doctests in that namespace (their output is checked,
  ``...`` matching anything); ```` ```bash ```` blocks run in ``bash -e`` with the test's Python
  environment first on ``PATH``; other blocks (``text``, output samples) are not code.
- Every page runs in a fresh folder that holds what the home page's set-up block makes
  (``scans/``, the sample PDFs; ``my-layoutlm/``, the demo classifier); a page that copies them
  itself (the home page, the README) starts in an empty folder.
- A block whose first line is ``# not run by the docs tests: <why>`` (it installs packages,
  needs a cluster, runs the whole test suite, ...) is not run: each such block is reported as a
  skipped test with its reason, so a skip is never silent.
"""

from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
MARK = "# not run by the docs tests:"
RUN = ("python", "pycon", "bash")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def skipped(self) -> str | None:
        """Why the block is not run (its marker comment), or None."""
        first = self.code.lstrip().splitlines()[0] if self.code.strip() else ""
        return first[len(MARK) :].strip() if first.startswith(MARK) else None


def blocks(page: Path) -> list[Block]:
    """The code blocks of ``page`` (``python``, ``pycon``, ``bash``), in page order."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        if match.group(1) in RUN:
            line = text.count("\n", 0, match.start()) + 1
            found.append(Block(page, line, match.group(1), match.group(2)))
    return found


def setup_block() -> Block:
    """The home page's block that makes ``scans/`` and ``my-layoutlm/``."""
    return next(b for b in blocks(ROOT / "docs" / "index.md") if "copytree" in b.code)


def run_page(page: Path, folder: Path) -> list[str]:
    """Run every block of ``page`` not marked as skipped, in ``folder`` (the current directory
    while they run); returns where each block that ran starts."""
    namespace: dict = {"__name__": "__main__"}
    todo = blocks(page)
    if not any("copytree" in block.code for block in todo):  # the page makes its own
        todo = [setup_block(), *todo]
    ran = []
    before, ray_was_up = os.getcwd(), _ray_up()
    os.chdir(folder)
    try:
        for block in todo:
            if block.skipped is None:
                _run(block, namespace, folder)
                ran.append(block.where)
    finally:
        os.chdir(before)
        if _ray_up() and not ray_was_up:  # a page's Ray instance ends with the page
            sys.modules["ray"].shutdown()
    return ran


def _ray_up() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _run(block: Block, namespace: dict, folder: Path) -> None:
    if block.lang == "python":
        exec(compile(block.code, block.where, "exec"), namespace)
    elif block.lang == "pycon":
        test = doctest.DocTestParser().get_doctest(block.code, namespace, block.where,
                                                   str(block.page), block.line)  # fmt: skip
        flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
        runner = doctest.DocTestRunner(optionflags=flags)
        runner.run(test, clear_globs=False)
        assert runner.failures == 0, f"{block.where}: the printed output differs (see above)"
    else:
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        done = subprocess.run(
            ["bash", "-e", "-c", block.code], cwd=folder, env={**os.environ, "PATH": path},
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert done.returncode == 0, (
            f"{block.where} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        )
