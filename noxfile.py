"""Sessions: tests, lint, typecheck, docs, bench, extras, compat. ``nox -s tests`` runs the whole
suite.

Every session runs on the Python that runs nox (``PY = None``: probhook supports 3.10+, and a
fresh machine has one Python, whichever it is). An interpreter asked for that is not there
(``nox --force-python 3.13``) fails the run instead of skipping the session, so that CI never
reads "skipped" as a pass.
"""

import os
import pathlib

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True
PY = None
CONSTRAINTS = ("-c", "constraints.txt")
QUIET = {"PIP_QUIET": "1", "PIP_NO_WARN_SCRIPT_LOCATION": "1"}


def install(session, extras):
    session.install(*CONSTRAINTS, "-e", f".[{extras}]", env=QUIET)


@nox.session(python=PY)
def tests(session):
    """The whole test suite (unit, real deepdoctection and Ray integration, doctests, the docs
    build)."""
    install(session, "all,ray,test,docs")
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    session.run("pytest", *session.posargs, env=env)


@nox.session(python=PY)
def extras(session):
    """Each extra installed into a fresh venv: its README commands run, missing extras are named."""
    session.install("pytest>=8", "pytest-timeout>=2.3", env=QUIET)
    # the venvs under test install probhook themselves; this one only runs pytest
    session.run("pytest", "--noconftest", "-m", "extras", "tests/test_extras.py", *session.posargs)


@nox.session(python=PY)
def lint(session):
    session.install("ruff>=0.6", env=QUIET)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PY)
def typecheck(session):
    install(session, "all")
    session.install("mypy>=1.10", "pandas-stubs", env=QUIET)
    session.run("mypy")


@nox.session(python=PY)
def docs(session):
    install(session, "all,docs")
    session.run("mkdocs", "build", "--strict")


@nox.session(python=PY)
def bench(session):
    """Benchmarks; ``nox -s bench -- --quick`` finishes in about two minutes."""
    install(session, "all,test")
    os.makedirs("benchmarks/results", exist_ok=True)
    scripts = ("bench_buffer.py", "bench_hook.py", "bench_memory.py", "bench_pipeline.py",
               "bench_tokens.py", "bench_repr.py", "bench_cli.py")  # fmt: skip
    for script in scripts:
        session.run("python", f"benchmarks/{script}", *session.posargs)


# deepdoctection versions probhook supports, each with the transformers it works with
# (deepdoctection 1.0.x declares transformers<5; 1.4 needs >=5.2). Oldest and newest run in CI.
DD_MATRIX = {"0.46.2": "5.24.0", "1.0.7": "4.57.6", "1.4.0": "5.24.0"}
DD_TESTS = ("tests/test_deepdoctection.py", "tests/test_dd_compat.py")


@nox.session(python=PY)
@nox.parametrize("dd", list(DD_MATRIX))
def compat(session, dd):
    """The deepdoctection tests on each supported deepdoctection version, one venv each.

    ``nox -s compat`` runs every version; ``nox -s "compat(dd='0.46.2')"`` runs one."""
    pins = pathlib.Path(session.create_tmp()) / "constraints.txt"
    core = [] if dd.startswith("0.") else [f"dd-core=={dd}"]  # 1.x splits into dd-core
    base = pathlib.Path("constraints.txt").read_text(encoding="utf-8")
    pins.write_text(
        "\n".join([base, f"deepdoctection=={dd}", f"transformers=={DD_MATRIX[dd]}", *core]),
        encoding="utf-8",
    )
    session.install("-c", str(pins), "-e", ".[deepdoctection,pandas,test]", env=QUIET)
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    session.run("pytest", "-p", "no:cacheprovider", *(session.posargs or DD_TESTS), env=env)
