"""The layout's contracts that a reader relies on, checked on the source itself."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "streamvc_rvq"


def test_result_files_are_read_only_through_the_metrics_view():
    """The verdict, reporting and evaluation rooms read metrics files, verdicts and reference levels
    through streamvc_rvq.metrics_view, so a renamed key changes one file."""
    readers = [path for folder in ("verdict", "reporting", "evaluation") for path in sorted((SRC / folder).glob("*.py"))]
    assert len(readers) > 10
    offenders = [f"{p.relative_to(SRC)}:{i}" for p in readers for i, line in enumerate(p.read_text().split("\n"), 1)
                 if re.search(r"\bjson\.loads?\(", line)]
    assert offenders == []
    assert re.search(r"\bjson\.loads?\(", (SRC / "metrics_view.py").read_text())  # the one reader does read


def test_no_globals_lookups():
    offenders = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if "globals()" in p.read_text()]
    assert offenders == []


def test_no_function_in_src_is_60_lines_or_longer():
    """A function a reader must scroll through has more than one job (the anchors' longest: 27 and 72)."""
    import ast

    long = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 >= 60:
                long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}")
    assert long == []


def test_decisions_do_not_import_the_files_a_person_reads():
    """verdict/ decides; reporting/ presents what it decided: the dependency goes one way (judge.py,
    the command glue that writes a verdict and its report, is the one module that sees both)."""
    offenders = [str(p.relative_to(SRC)) for p in (SRC / "verdict").glob("*.py")
                 if re.search(r"^from streamvc_rvq\.reporting\b", p.read_text(), re.M) and p.name != "judge.py"]
    assert offenders == []
