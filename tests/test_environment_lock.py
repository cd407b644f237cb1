"""The lock files pin the environment pyproject.toml declares, and agree with each other.

uv.lock (for `uv sync` / `uv run`) and requirements.lock (its export, for pip) are regenerated
by the command in requirements.lock's header; these checks fail, offline and at once, when
pyproject.toml's dependencies move without a re-lock, or when the two files drift apart.
"""

import shutil
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "streamvc-rvq"
EXPORT_COMMAND = "uv export --frozen --no-hashes --no-emit-project --all-extras -o requirements.lock"
DELIBERATE_PINS = {"torch": "2.14.1", "torchaudio": "2.11.0"}


def _declared(pyproject: dict) -> list[tuple[str | None, Requirement]]:
    """(extra or None, requirement) for [project].dependencies and every optional extra."""
    project = pyproject["project"]
    out = [(None, Requirement(r)) for r in project["dependencies"]]
    for extra, reqs in project.get("optional-dependencies", {}).items():
        out += [(extra, Requirement(r)) for r in reqs]
    return out


def _key(name: str, specifier: str, marker: str | None) -> tuple[str, str, str]:
    return (canonicalize_name(name), str(SpecifierSet(specifier)), str(Marker(marker)) if marker else "")


def _requirements_lock_pins(text: str) -> tuple[list[str], set[tuple[str, str]]]:
    """(problems, {(name, version)}) of requirements.lock's lines."""
    problems, pins = [], set()
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith((" ", "\t", "-")):
            problems.append(f"requirements.lock: unexpected line {line.strip()!r} (hashes or options?)")
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==":
            problems.append(f"requirements.lock: {line.split(';')[0].strip()} is not an exact == pin")
            continue
        pins.add((canonicalize_name(req.name), str(Version(specs[0].version))))
    return problems, pins


def lock_problems(root: Path) -> list[str]:
    """Every way pyproject.toml, uv.lock and requirements.lock under root disagree (empty: in step)."""
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    lock = tomllib.loads((root / "uv.lock").read_text())
    problems = []

    locked: dict[str, set[str]] = {}
    project_entry = None
    for package in lock["package"]:
        name = canonicalize_name(package["name"])
        if name == PROJECT:
            project_entry = package
            continue
        locked.setdefault(name, set()).add(str(Version(package["version"])))
    if project_entry is None:
        return [f"uv.lock has no entry for the project {PROJECT}"]

    # Every declared requirement has a locked version, and each locked version (one per
    # Python-version fork) satisfies its specifier.
    for extra, req in _declared(pyproject):
        where = f"[{extra}] " if extra else ""
        versions = locked.get(canonicalize_name(req.name))
        if not versions:
            problems.append(f"{where}{req} is not in uv.lock")
            continue
        bad = sorted(v for v in versions if not req.specifier.contains(v, prereleases=True))
        if bad:
            problems.append(f"{where}{req}: uv.lock pins {', '.join(bad)}")

    # uv.lock records the requirements it was resolved from; they must be pyproject's
    # (a changed specifier that the old pin still happens to satisfy is drift too).
    declared = set()
    for extra, req in _declared(pyproject):
        marker = str(req.marker) if req.marker else None
        if extra:
            marker = f"extra == '{extra}'" + (f" and ({marker})" if marker else "")
        declared.add(_key(req.name, str(req.specifier), marker))
    recorded = {
        _key(r["name"], r.get("specifier", ""), r.get("marker"))
        for r in project_entry.get("metadata", {}).get("requires-dist", [])
    }
    for name, spec, marker in sorted(declared - recorded):
        problems.append(f"pyproject.toml has {name}{spec}{f' ; {marker}' if marker else ''}, uv.lock was not resolved from it: re-lock")
    for name, spec, marker in sorted(recorded - declared):
        problems.append(f"uv.lock was resolved from {name}{spec}{f' ; {marker}' if marker else ''}, no longer in pyproject.toml: re-lock")

    constraints = {
        _key(Requirement(c).name, str(Requirement(c).specifier), None)
        for c in pyproject.get("tool", {}).get("uv", {}).get("constraint-dependencies", [])
    }
    recorded_constraints = {
        _key(c["name"], c.get("specifier", ""), c.get("marker"))
        for c in lock.get("manifest", {}).get("constraints", [])
    }
    if constraints != recorded_constraints:
        problems.append("[tool.uv] constraint-dependencies differ from uv.lock's manifest: re-lock")

    # requirements.lock: the pip path pins exactly uv.lock's versions, all of them.
    text = (root / "requirements.lock").read_text()
    if EXPORT_COMMAND not in text.split("\n", 3)[1]:
        problems.append(f"requirements.lock's header is not from `{EXPORT_COMMAND}`")
    line_problems, pins = _requirements_lock_pins(text)
    problems += line_problems
    want = {(name, v) for name, versions in locked.items() for v in versions}
    for name, version in sorted(pins - want):
        problems.append(f"requirements.lock pins {name}=={version}, uv.lock does not")
    for name, version in sorted(want - pins):
        problems.append(f"uv.lock pins {name}=={version}, requirements.lock does not")
    for name, version in DELIBERATE_PINS.items():
        if (name, version) not in pins:
            problems.append(f"requirements.lock does not pin {name}=={version}")
    return problems


def test_locks_are_in_step_with_pyproject():
    assert lock_problems(ROOT) == []


def test_lock_pins_torch_for_the_supported_platforms():
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    torch = [p for p in lock["package"] if p["name"] == "torch"]
    assert [p["version"] for p in torch] == ["2.14.1"]
    tags = " ".join(w["url"].rsplit("/", 1)[1] for w in torch[0]["wheels"])
    for platform in ("manylinux_2_28_x86_64", "manylinux_2_28_aarch64", "macosx_14_0_arm64"):
        assert f"cp311-cp311-{platform}" in tags


# (file, text, its drifted replacement, what the problem must name)
DRIFTS = [
    ("pyproject.toml", '"pandas>=2.0"', '"pandas>=99"', "pandas>=99"),
    ("pyproject.toml", '"pyyaml>=6.0"', '"pyyaml>=5.0"', "pyyaml>=5.0"),  # still satisfied by the old pin
    ("pyproject.toml", '"pyyaml>=6.0",', '"pyyaml>=6.0",\n    "not-a-locked-package>=1",', "not-a-locked-package"),
    ("requirements.lock", "\ntorchaudio==2.11.0 ", "\ntorchaudio==2.10.0 ", "torchaudio==2.10.0"),
]


@pytest.mark.parametrize("name, text, drifted, marker", DRIFTS)
def test_drift_is_caught(tmp_path, name, text, drifted, marker):
    for copied in ("pyproject.toml", "uv.lock", "requirements.lock"):
        shutil.copy(ROOT / copied, tmp_path / copied)
    assert lock_problems(tmp_path) == []
    path = tmp_path / name
    assert text in path.read_text()
    path.write_text(path.read_text().replace(text, drifted, 1))
    problems = lock_problems(tmp_path)
    assert problems and any(marker in p for p in problems), problems
