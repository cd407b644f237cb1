"""Regenerate the Mermaid DAG in docs/dag.md from `snakemake --dag mermaid-js`.

    python .ci/readme_dag.py           # rewrite the block
    python .ci/readme_dag.py --check   # exit 1 if the block is stale
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- dag:start[^>]*-->\n)(.*?)(<!-- dag:end -->)", re.DOTALL)
TARGET = "results/phase1/verdict.json"
DOC = ROOT / "docs" / "dag.md"


def mermaid_dag() -> str:
    """The DAG of the default config, planned in a scratch copy (nothing built, nothing read)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copy(ROOT / "Snakefile", work)
        for name in ("rules", "config", "profiles", "envs"):
            shutil.copytree(ROOT / name, work / name)
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
        proc = subprocess.run(
            [sys.executable, "-m", "snakemake", "--dag", "mermaid-js", TARGET],
            cwd=work, env=env, capture_output=True, text=True, check=True,
        )
    return proc.stdout.strip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    readme = DOC.read_text()
    match = BLOCK.search(readme)
    if not match:
        print("docs/dag.md has no <!-- dag:start --> ... <!-- dag:end --> block", file=sys.stderr)
        return 1
    block = "```mermaid\n" + mermaid_dag() + "```\n"
    if args.check:
        if match[2] != block:
            print("docs/dag.md's DAG is stale: run python .ci/readme_dag.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(readme[: match.start(2)] + block + readme[match.end(2) :])
    return 0


if __name__ == "__main__":
    sys.exit(main())
