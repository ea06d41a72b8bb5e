"""The package's shape: no import circle, the core names no framework, modules stay small."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "probhook"
CORE_EXCLUDED = (
    "integrations",
    "cli",
    "testing.py",
    "demo",
    "__main__.py",
)  # cli*: the command line


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def runtime_imports(path):
    """Names of probhook modules ``path`` imports at run time, lazily inside functions too;
    imports under ``if TYPE_CHECKING:`` are for the type checker only and are skipped."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("probhook"))
            elif isinstance(child, ast.ImportFrom) and (child.module or "").startswith("probhook"):
                for alias in child.names:
                    sub = f"{child.module}.{alias.name}"
                    found.add(sub if sub in MODULES else child.module)
            visit(child)

    visit(tree)
    return {m for m in found if m in MODULES}


def test_no_import_circle_inside_probhook():
    graph = {name: runtime_imports(path) - {name} for name, path in MODULES.items()}
    circles, state = [], {}

    def walk(node, trail):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                circles.append([*trail[trail.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt, [*trail, nxt])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            walk(start, [start])
    assert circles == [], circles


def test_the_core_names_no_framework():
    assert "deepdoctection" not in (PACKAGE / "capture.py").read_text(encoding="utf-8")
    for name, path in MODULES.items():
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(CORE_EXCLUDED):
            continue
        imported = runtime_imports(path)
        assert not {m for m in imported if m.startswith("probhook.integrations.")}, name
        text = path.read_text(encoding="utf-8")
        assert "import deepdoctection" not in text, name
        assert "dd_core" not in text, name


def test_no_module_is_over_400_lines():
    sizes = {name: len(p.read_text(encoding="utf-8").splitlines()) for name, p in MODULES.items()}
    assert {n: s for n, s in sizes.items() if s > 400} == {}


WRITE_PATH = [  # lowest first: a room imports only rooms before it
    "probhook.block",
    "probhook.column_store",
    "probhook.ring",
    "probhook.arrow_rows",
    "probhook.arrow",
    "probhook.sink",
    "probhook.writer",
    "probhook.buffer",
    "probhook.head_view",
    "probhook.hooks",
    "probhook.recording",
    "probhook.capture",
]


def test_the_write_path_imports_only_downward():
    upward = {
        name: sorted(m for m in runtime_imports(MODULES[name]) if m in WRITE_PATH[i:] and m != name)
        for i, name in enumerate(WRITE_PATH)
    }
    assert {n: ups for n, ups in upward.items() if ups} == {}
