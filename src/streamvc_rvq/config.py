"""Configuration: load, validate against config/schema.yaml, and resolve experiments.

An experiment is a named set of overrides deep-merged onto the shared ``model``, ``train``
and ``evaluation`` sections, so arms of a comparison differ only where they say so.
A seed variant ``{experiment}_s{seed}`` is the experiment with ``train.seed`` replaced;
it exists so that ``ab.*.seeds`` can run each arm once per seed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).with_name("schema.yaml")
_SEED_SUFFIX = re.compile(r"^(?P<base>.+)_s(?P<seed>\d+)$")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message says which key and why."""


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _extend_with_default(validator_class):
    """A validator that fills in schema defaults as it validates (as snakemake's validate does)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_DefaultValidator = _extend_with_default(jsonschema.Draft202012Validator)


def validate(config: dict, schema: dict | None = None) -> dict:
    """Validate ``config`` in place, filling defaults; raise ConfigError naming the bad key."""
    schema = schema or load_schema()
    errors = sorted(_DefaultValidator(schema).iter_errors(config), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = ".".join(str(p) for p in e.path) or "<top level>"
        raise ConfigError(f"config key {where}: {e.message}")
    return config


def load_config(*paths: str | Path) -> dict:
    """Merge YAML files left to right (as snakemake --configfile does) and validate."""
    config: dict = {}
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        config = deep_merge(config, data)
    return validate(config)


def deep_merge(base: dict, override: dict) -> dict:
    """A new dict: ``base`` with ``override`` merged in; nested dicts merge, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def experiment_names(config: dict) -> list[str]:
    """Every experiment the workflow can build: the configured ones and their A/B seed variants."""
    names = list(config["experiments"])
    for comparison in config.get("ab", {}).values():
        for arm in comparison["arms"]:
            names.extend(n for n in seed_variants(config, arm) if n not in names)
    return names


def seed_variants(config: dict, arm: str) -> list[str]:
    """Experiment names of ``arm`` for each seed of its A/B comparisons (the arm itself for its own seed)."""
    own_seed = resolve_experiment(config, arm)["train"]["seed"]
    seeds: list[int] = []
    for comparison in config.get("ab", {}).values():
        if arm in comparison["arms"]:
            seeds.extend(s for s in comparison.get("seeds", [own_seed]) if s not in seeds)
    return [arm if s == own_seed else f"{arm}_s{s}" for s in (seeds or [own_seed])]


def resolve_experiment(config: dict, name: str) -> dict:
    """The full config of experiment ``name``: shared sections with its overrides merged in."""
    experiments = config["experiments"]
    seed = None
    if name not in experiments:
        match = _SEED_SUFFIX.match(name)
        if not match or match["base"] not in experiments:
            known = ", ".join(sorted(experiments))
            raise ConfigError(f"unknown experiment {name!r}; the config defines: {known}")
        name, seed = match["base"], int(match["seed"])
    resolved = {
        "corpus": copy.deepcopy(config["corpus"]),
        "model": copy.deepcopy(config["model"]),
        "train": copy.deepcopy(config["train"]),
        "evaluation": copy.deepcopy(config["evaluation"]),
    }
    resolved = deep_merge(resolved, experiments[name])
    if seed is not None:
        resolved["train"]["seed"] = seed
    resolved["experiment"] = name if seed is None else f"{name}_s{seed}"
    schema = load_schema()["properties"]
    for section in ("model", "train", "evaluation"):
        try:
            validate(resolved[section], schema[section])
        except ConfigError as err:
            raise ConfigError(f"experiment {resolved['experiment']}: {section}.{str(err)[len('config key '):]}") from None
    steps = resolved["train"]["steps"]
    if sorted(set(steps)) != steps:
        raise ConfigError(f"experiment {resolved['experiment']}: train.steps must be strictly increasing, got {steps}")
    return resolved


def config_hash(section: dict) -> str:
    """Stable short hash of a config section (key order does not matter)."""
    blob = json.dumps(section, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
