"""The micro corpus and configs the tests share: built once per session, real code throughout."""

from __future__ import annotations

from pathlib import Path

from streamvc_rvq.config import deep_merge, load_config, resolve_experiment

ROOT = Path(__file__).resolve().parents[1]
CONFIG_FILES = (ROOT / "config" / "config.yaml", ROOT / "config" / "micro.yaml")
# every remedy arm (config.yaml's ladder): the per-arm tests train each on micro, although the
# micro workflow's own ladder runs a few of them
EVERY_ARM = load_config(ROOT / "config" / "config.yaml")["ladder"]["arms"]


def micro_config(experiment: str = "phase1", **overrides) -> dict:
    """The resolved micro config of ``experiment`` with nested ``overrides`` merged in."""
    cfg = resolve_experiment(load_config(*CONFIG_FILES), experiment)
    return deep_merge(cfg, overrides)
