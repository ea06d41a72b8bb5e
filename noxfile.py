"""Sessions: tests, lint, typecheck, docs, bench. ``nox -s tests`` runs the whole suite."""

import os

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"
PY = "3.11"
CONSTRAINTS = ("-c", "constraints.txt")
QUIET = {"PIP_QUIET": "1", "PIP_NO_WARN_SCRIPT_LOCATION": "1"}


def install(session, extras):
    session.install(*CONSTRAINTS, "-e", f".[{extras}]", env=QUIET)


@nox.session(python=PY)
def tests(session):
    """The whole test suite (unit, integration with real deepdoctection, doctests)."""
    install(session, "all,test")
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    session.run("pytest", *session.posargs, env=env)


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
    """Benchmarks; ``nox -s bench -- --quick`` finishes in about a minute."""
    install(session, "all,test")
    os.makedirs("benchmarks/results", exist_ok=True)
    scripts = ("bench_buffer.py", "bench_hook.py", "bench_memory.py", "bench_pipeline.py",
               "bench_tokens.py")  # fmt: skip
    for script in scripts:
        session.run("python", f"benchmarks/{script}", *session.posargs)
