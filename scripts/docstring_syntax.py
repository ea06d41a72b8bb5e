"""Rewrite reStructuredText habits in docstrings into what mkdocstrings renders.

* Sphinx roles become cross-references: ``:class:`~probhook.sink.FileSink``` becomes
  ``[`FileSink`][probhook.sink.FileSink]``, ``:meth:`get``` becomes ``[`get`][get]`` (resolved in
  the docstring's scope: ``scoped_crossrefs`` in mkdocs.yml). Roles: class, meth, func, mod,
  data, attr, exc, obj.
* A bare doctest block (``>>>`` at the docstring's own indentation) is moved into a Google-style
  ``Examples:`` section, which mkdocstrings renders as code (doctest still runs it).
* A paragraph ending in ``::`` (an rst literal block marker) ends in ``:`` instead.

Only docstrings are touched (found with ``ast``), so code and comments stay as they are.

    python scripts/docstring_syntax.py probhook            # rewrite in place
    python scripts/docstring_syntax.py --check probhook    # list files it would change, exit 1
"""

from __future__ import annotations

import argparse
import ast
import itertools
import re
import sys
from pathlib import Path

DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
ASSIGNS = (ast.Assign, ast.AnnAssign)
ROLE = re.compile(r":(?:py:)?(class|meth|func|mod|data|attr|exc|obj):`(~?)([^`<>]+?)`")


def convert_roles(text: str) -> str:
    """Sphinx roles in ``text`` as mkdocstrings cross-references.

    >>> convert_roles("see :class:`~probhook.sink.FileSink` and :meth:`get`")
    'see [`FileSink`][probhook.sink.FileSink] and [`get`][get]'
    >>> convert_roles(":mod:`probhook._torch`")
    '``probhook._torch``'
    """

    def link(match: re.Match[str]) -> str:
        _role, tilde, target = match.groups()
        target = target.strip()
        shown = target.rsplit(".", 1)[-1] if tilde else target
        if any(part.startswith("_") for part in target.split(".")):
            return f"``{shown}``"  # private: not in the reference, nothing to link to
        return f"[`{shown}`][{target}]"

    return ROLE.sub(link, text)


ENTRY = re.compile(r"\s*[\w.*]+( \(.*\))?: ")  # an Args:/Attributes: entry


def _break_at(line: str, width: int) -> int | None:
    """The last space before ``width`` outside code spans and link brackets, or None."""
    best, ticks, depth = None, 0, 0
    for i, char in enumerate(line):
        if char == "`":
            ticks ^= 1
        elif char == "[":
            depth += 1
        elif char == "]":
            depth = max(0, depth - 1)
        elif char == " " and i > _indent(line) and not ticks and not depth:
            if i > width and best is not None:
                break
            best = i
    return best


def _continues(line: str, nxt: str) -> bool:
    """Whether ``nxt`` continues the paragraph (or Args entry) of ``line``."""
    if not nxt.strip() or _indent(nxt) < _indent(line) or ENTRY.match(nxt):
        return False
    if nxt.lstrip().startswith((">>>", "*", "-", '"' * 3, "'" * 3)):
        return False
    return not (_indent(nxt) == _indent(line) and ENTRY.match(line))


def rewrap(lines: list[str], width: int) -> list[str]:
    """Lines longer than ``width`` (made longer by the links) spill their last words onto the
    next line of the same paragraph, or onto a new line indented like it. Doctest lines stay.

    >>> rewrap(["    see [`a`][x.a] and more", "    words."], 20)
    ['    see [`a`][x.a]', '    and more words.']
    """
    out = list(lines)
    i = 0
    while i < len(out):
        line = out[i]
        cut = _break_at(line, width) if len(line) > width else None
        if cut is None or line.lstrip().startswith((">>>", "...")):
            i += 1
            continue
        head, tail = line[:cut].rstrip(), line[cut:].strip()
        nxt = out[i + 1] if i + 1 < len(out) else ""
        if _continues(line, nxt):
            out[i : i + 2] = [head, " " * _indent(nxt) + tail + " " + nxt.strip()]
        else:
            extra = 4 if ENTRY.match(line) else 0
            out[i : i + 1] = [head, " " * (_indent(line) + extra) + tail]
        i += 1
    return out


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def wrap_examples(lines: list[str], base: int) -> list[str]:
    """Doctest blocks at indentation ``base`` moved into an ``Examples:`` section.

    Consecutive blocks separated only by blank lines share one section; a block already
    under a section (indented deeper than ``base``) is left alone.

    >>> wrap_examples(["Text.", "", ">>> 1 + 1", "2", "", "More text."], 0)
    ['Text.', '', 'Examples:', '    >>> 1 + 1', '    2', '', 'More text.']
    """
    out: list[str] = []
    i, pad = 0, " " * base
    while i < len(lines):
        line = lines[i]
        if not (line.strip().startswith(">>>") and _indent(line) == base):
            out.append(line)
            i += 1
            continue
        out.append(f"{pad}Examples:")
        while i < len(lines):  # the block and any next block after blank lines
            j = i
            while j < len(lines) and lines[j].strip():
                j += 1
            out.extend(f"    {text}" if text.strip() else text for text in lines[i:j])
            k = j
            while k < len(lines) and not lines[k].strip():
                k += 1
            if k < len(lines) and lines[k].strip().startswith(">>>") and _indent(lines[k]) == base:
                out.extend(lines[j:k])
                i = k
            else:
                i = j
                break
    return out


def convert_docstring(body: list[str]) -> list[str]:
    """One docstring's lines (without the quotes) converted; the first line may hold text
    right after the opening quotes (its indentation does not count)."""
    rest = [line for line in body[1:] if line.strip()]
    base = min((_indent(line) for line in rest), default=0)
    if body and body[0].strip().startswith(">>>"):  # examples right after the opening quotes
        body = ["", " " * base + body[0].strip(), *body[1:]]
    lines = [convert_roles(line) for line in body]
    lines = [line[:-1] if line.endswith("::") and line.strip() != "::" else line for line in lines]
    return wrap_examples(lines, base)


def _docstring_nodes(tree: ast.Module) -> list[ast.Constant]:
    """The string constants that are docstrings: of the module, classes and functions, and
    attribute docstrings (a string right after an assignment)."""
    found: dict[int, ast.Constant] = {}
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        starts = [body[0]] if isinstance(node, DOCUMENTED) and body else []
        after_assign = [b for a, b in itertools.pairwise(body) if isinstance(a, ASSIGNS)]
        for stmt in starts + after_assign:
            value = getattr(stmt, "value", None)
            is_string = isinstance(value, ast.Constant) and isinstance(value.value, str)
            if isinstance(stmt, ast.Expr) and is_string:
                found[id(value)] = value
    return list(found.values())


def convert_source(source: str, width: int = 100) -> str:
    """``source`` with every docstring converted (lines it lengthens rewrapped at ``width``);
    the rest byte for byte as it was."""
    lines = source.splitlines(keepends=True)
    nodes = sorted(_docstring_nodes(ast.parse(source)), key=lambda n: -n.lineno)
    for node in nodes:
        first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
        text = "".join(lines[first : last + 1])
        opening = re.match(r"\s*[rRuU]?(\"\"\"|''')", text)
        if opening is None:  # a one-quote string: no examples or blocks to convert
            lines[first : last + 1] = [convert_roles(text)]
            continue
        start, quote = opening.end(), opening.group(1)
        end = text.rindex(quote)
        body = text[start:end].split("\n")
        new_body = "\n".join(convert_docstring(body))
        new = text[:start] + new_body + text[end:]
        if new != text:
            trail = "\n" if new.endswith("\n") else ""
            new = "\n".join(rewrap(new.removesuffix(trail).split("\n"), width)) + trail
        lines[first : last + 1] = [new]
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="files or folders of .py files")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if needed")
    args = parser.parse_args(argv)
    files = [f for p in args.paths for f in (sorted(p.rglob("*.py")) if p.is_dir() else [p])]
    changed = []
    for file in files:
        old = file.read_text(encoding="utf-8")
        new = convert_source(old)
        if new != old:
            changed.append(file)
            if not args.check:
                file.write_text(new, encoding="utf-8")
    for file in changed:
        print(f"{'would change' if args.check else 'changed'}: {file}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
