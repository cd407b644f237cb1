"""The points a step target logged, as a file the workflow declares (``scalars/step_N.json``).

Training writes one per target; evaluation, the verdict and the ladder read the chain of them,
so Snakemake sees that they depend on training's curves (the TensorBoard folder, shared by
every segment, is for watching)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from streamvc_rvq.atomic import write_json

Scalars = Mapping[str, Sequence[tuple[int, float]]]


def write_segment_scalars(path: str | os.PathLike, scalars: Scalars, experiment: str | None) -> None:
    """One step target's logged points, ``{tag: [[step, value], ...]}`` (atomically)."""
    write_json(path, {"experiment": experiment,
                      "scalars": {tag: [[int(s), float(v)] for s, v in points] for tag, points in scalars.items()}})


def segment_experiment(path: str | os.PathLike) -> str | None:
    """The experiment whose training wrote this scalars file."""
    return json.loads(Path(path).read_text()).get("experiment")


def read_segment_scalars(paths: Iterable[str | os.PathLike]) -> dict[str, list[tuple[int, float]]]:
    """The points of a chain of step targets' scalars files, merged (a later file wins a
    step written twice, as a rebuilt segment does in TensorBoard)."""
    merged: dict[str, dict[int, float]] = {}
    for path in paths:
        for tag, points in json.loads(Path(path).read_text())["scalars"].items():
            merged.setdefault(tag, {}).update((int(s), float(v)) for s, v in points)  # "nan" -> nan
    return {tag: sorted(points.items()) for tag, points in merged.items()}
