"""Configuration: load, validate against config/schema.yaml, and resolve experiments.

An experiment is a named set of overrides deep-merged onto the shared ``model``, ``train``
and ``evaluation`` sections, so arms of a comparison differ only where they say so.
A seed variant ``{experiment}_s{seed}`` is the experiment with ``train.seed`` replaced;
it exists so that ``ab.*.seeds`` can run each arm once per seed.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import re
from pathlib import Path

import jsonschema
import yaml

from streamvc_rvq.training.scaling import scale_protocol

SCHEMA_PATH = Path(__file__).with_name("schema.yaml")
DEFAULT_PRESET, DEFAULT_CORPUS = "paper", "espeak"
_SEED_SUFFIX = re.compile(r"^(?P<base>.+)_s(?P<seed>\d+)$")  # seed_variant's names, parsed back
_TIMES_SUFFIX = re.compile(r"^(?P<base>.+)_x(?P<times>\d+)$")


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


def _schema_at(schema: dict, path: list) -> dict:
    """The sub-schema describing the value at ``path`` (keys of objects)."""
    for key in path:
        props = schema.get("properties", {})
        if key in props:
            schema = props[key]
        elif isinstance(schema.get("additionalProperties"), dict):
            schema = schema["additionalProperties"]
        else:
            return {}
    return schema


def _message(error, schema: dict, prefix: tuple[str, ...] = ()) -> str:
    """One line for a schema error: the dotted key (after ``prefix``), what is wrong, and the
    nearest valid key for a misspelling."""
    path = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties":
        valid = sorted(_schema_at(schema, path).get("properties", {}))
        unknown = sorted(set(error.instance) - set(valid))
        where = ".".join([*prefix, *path, *unknown[:1]])
        near = difflib.get_close_matches(unknown[0], valid, n=1, cutoff=0.5) if unknown else []
        hint = f"did you mean {'.'.join([*prefix, *path, *near])}?" if near else f"valid keys here: {', '.join(valid)}"
        return f"config key {where} is not a known key; {hint}"
    where = ".".join([*prefix, *path]) or "<top level>"
    message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
    return f"config key {where}: {message}"


def validate(config: dict, schema: dict | None = None, prefix: tuple[str, ...] = ()) -> dict:
    """Validate ``config`` in place, filling defaults; raise ConfigError naming the bad key
    (``prefix``: where ``config`` sits in the user's file) and, for a misspelled key, the
    nearest valid one."""
    schema = schema or load_schema()
    errors = sorted(_DefaultValidator(schema).iter_errors(config), key=lambda e: list(e.path))
    if errors:
        raise ConfigError(_message(errors[0], schema, prefix))
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


def model_with_defaults(model: dict) -> dict:
    """A stored ``model`` section completed with the schema's defaults: a checkpoint written
    before a key existed was trained with that key's default (e.g. ``rvq.projection_dim: 0``)."""
    schema = {"type": "object", "properties": {"model": load_schema()["properties"]["model"]}}
    return validate({"model": copy.deepcopy(model)}, schema)["model"]


def verdict_arms(config: dict) -> list[str]:
    """The experiment the verdict judges and its control (if any)."""
    verdict = config["verdict"]
    return [verdict["experiment"]] + ([verdict["control"]] if verdict.get("control") else [])


def seeded_groups(config: dict) -> list[dict]:
    """Every group of arms run over seeds: the A/B comparisons, the remedy ladder and the
    verdict's seeds."""
    groups = list(config.get("ab", {}).values())
    if config.get("ladder", {}).get("arms"):
        groups.append(config["ladder"])
    if config["verdict"].get("seeds"):
        groups.append({"arms": [config["verdict"]["experiment"]], "seeds": config["verdict"]["seeds"]})
    return groups


def control_of(config: dict, experiment: str) -> str | None:
    """The control run ``experiment``'s verdict is compared with: ``verdict.control``, at the
    same protocol scale (``{control}_x{times}`` for a fidelity variant); None for the control
    itself and its variants."""
    control = config["verdict"].get("control")
    longer = _TIMES_SUFFIX.match(experiment)
    if not control or experiment == control or (longer and longer["base"] == control):
        return None
    if longer and longer["base"] in config["experiments"]:
        return f"{control}_x{longer['times']}"
    return control


def seed_runs(config: dict, experiment: str) -> list[str]:
    """The other seeds' runs of ``experiment`` whose verdicts its verdict summarises
    (``verdict.seeds``; only for the experiment the verdict judges)."""
    if experiment != config["verdict"]["experiment"] or not config["verdict"].get("seeds"):
        return []
    return [name for name in seed_variants(config, experiment) if name != experiment]


def fidelity_variant(config: dict, name: str) -> str | None:
    """The experiment ``name`` at ``verdict.fidelity_times`` times the protocol, or None."""
    times = config["verdict"].get("fidelity_times")
    return f"{name}_x{times}" if times else None


def experiment_names(config: dict) -> list[str]:
    """Every experiment the workflow can build: the configured ones and their seed variants."""
    names = list(config["experiments"])
    for group in seeded_groups(config):
        for arm in group["arms"]:
            names.extend(n for n in seed_variants(config, arm) if n not in names)
    if config["verdict"].get("fidelity_times"):
        names.extend(fidelity_variant(config, arm) for arm in verdict_arms(config))
    return names


def seed_variant(arm: str, seed: int) -> str:
    """The experiment name of ``arm`` trained with ``train.seed: seed`` (the one naming scheme)."""
    return f"{arm}_s{seed}"


def arm_of(experiment: str, arms) -> str:
    """The arm a run belongs to: the arm itself or one of its :func:`seed_variant` names."""
    for arm in sorted(arms, key=len, reverse=True):
        seeded = _SEED_SUFFIX.match(experiment)
        if experiment == arm or (seeded and seeded["base"] == arm):
            return arm
    raise ValueError(f"run {experiment!r} belongs to none of the arms {list(arms)}")


def seed_variants(config: dict, arm: str) -> list[str]:
    """Experiment names of ``arm`` for each seed of its A/B comparisons and the ladder (the arm
    itself for its own seed)."""
    own_seed = resolve_experiment(config, arm)["train"]["seed"]
    seeds: list[int] = []
    for comparison in seeded_groups(config):
        if arm in comparison["arms"]:
            seeds.extend(s for s in comparison.get("seeds", [own_seed]) if s not in seeds)
    return [arm if s == own_seed else seed_variant(arm, s) for s in (seeds or [own_seed])]


def resolve_experiment(config: dict, name: str) -> dict:
    """The full config of experiment ``name``: shared sections with its overrides merged in."""
    experiments = config["experiments"]
    seed = times = None
    if name not in experiments:
        seeded, longer = _SEED_SUFFIX.match(name), _TIMES_SUFFIX.match(name)
        if seeded and seeded["base"] in experiments:
            name, seed = seeded["base"], int(seeded["seed"])
        elif longer and longer["base"] in experiments:
            name, times = longer["base"], int(longer["times"])
        else:
            known = ", ".join(sorted(experiments))
            raise ConfigError(f"unknown experiment {name!r}; the config defines: {known}")
    resolved = {
        "preset": config.get("preset", DEFAULT_PRESET),
        "corpus": copy.deepcopy(config["corpus"]),
        "model": copy.deepcopy(config["model"]),
        "train": copy.deepcopy(config["train"]),
        "evaluation": copy.deepcopy(config["evaluation"]),
    }
    resolved = deep_merge(resolved, experiments[name])
    if seed is not None:
        resolved["train"]["seed"] = seed
    resolved["experiment"] = name if seed is None else seed_variant(name, seed)
    if times is not None:
        resolved["experiment"] = f"{name}_x{times}"
        scale = resolved["train"].get("scale", 1.0) * times
        if scale > 1:
            raise ConfigError(f"experiment {resolved['experiment']}: train.scale x {times} = {scale:g} is more than "
                              "the paper-size protocol (1); lower verdict.fidelity_times")
        resolved["train"]["scale"] = scale
    properties = load_schema()["properties"]
    sections = {"type": "object", "properties": {k: properties[k] for k in ("model", "train", "evaluation")}}
    validate({k: resolved[k] for k in ("model", "train", "evaluation")}, sections, prefix=("experiments", name))
    resolved["model"], resolved["train"] = scale_protocol(resolved["model"], resolved["train"])
    steps = resolved["train"]["steps"]
    if sorted(set(steps)) != steps:
        raise ConfigError(f"experiment {resolved['experiment']}: train.steps must be strictly increasing, got {steps}")
    problem = content_gradient_problem(resolved)
    if problem:
        raise ConfigError(f"experiment {resolved['experiment']}: {problem}")
    clusters, head = resolved["corpus"]["label_kmeans"]["num_clusters"], resolved["model"]["content_encoder"]["num_labels"]
    if label_method(resolved["corpus"]) in ("auto", "mfcc_kmeans") and head and clusters > head:
        raise ConfigError(
            f"experiment {resolved['experiment']}: corpus.label_kmeans.num_clusters {clusters} is more than "
            f"model.content_encoder.num_labels {head}; the label head needs one class per cluster"
        )
    return resolved


def content_gradient_problem(cfg: dict) -> str | None:
    """Why the content encoder of ``cfg`` would get no gradient at all, or None.

    With ``stop_gradient`` (StreamVC's design) the content head's cross-entropy on frame
    labels is its only training signal; without labels, head or weight it stays a random,
    frozen encoder, and every RVQ measurement describes that encoder's features. Such a
    config is refused unless ``train.allow_untrained_content_encoder`` says it is meant.
    """
    if cfg["train"].get("allow_untrained_content_encoder") or not cfg["model"]["content_encoder"]["stop_gradient"]:
        return None
    if cfg.get("corpus", {}).get("labels") == "none":
        reason, fix = "corpus.labels is none", "use corpus.labels: auto (k-means labels for any corpus)"
    elif cfg["model"]["content_encoder"]["num_labels"] == 0:
        reason, fix = "model.content_encoder.num_labels is 0: no label head", "give it a label head (num_labels: 128)"
    elif cfg["train"]["loss_weights"]["content_ce"] == 0:
        reason, fix = "train.loss_weights.content_ce is 0", "give the label loss a weight (content_ce: 1.0)"
    else:
        return None
    return (f"the content encoder would never be trained ({reason}, and content_encoder.stop_gradient is true); "
            f"{fix}, or set train.allow_untrained_content_encoder: true to measure a random, frozen encoder on purpose")


def check_references(config: dict) -> None:
    """Experiment names the config refers to (verdict, control, A/B and ladder arms) must exist."""
    known = set(config["experiments"])
    refs = [("verdict.experiment", config["verdict"]["experiment"]), ("verdict.control", config["verdict"].get("control"))]
    refs += [(f"ab.{name}.arms", arm) for name, ab in config.get("ab", {}).items() for arm in ab["arms"]]
    refs += [("ladder.arms", arm) for arm in config.get("ladder", {}).get("arms", [])]
    for key, name in refs:
        if name is not None and name not in known:
            near = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.5)
            hint = f"did you mean {near[0]}?" if near else f"the experiments are: {', '.join(config['experiments'])}"
            raise ConfigError(f"config key {key} names experiment {name!r}, which the config does not define; {hint}")


def label_method(corpus: dict) -> str:
    """``corpus.labels`` as far as the config alone can resolve it: the built-in corpus always
    has its eSpeak phoneme labels, so ``auto`` is ``files`` there; a folder corpus's ``auto``
    is decided from its files by the labelling job."""
    if corpus["type"] == "builtin" and corpus["labels"] == "auto":
        return "files"
    return corpus["labels"]


def labels_config(corpus: dict) -> dict:
    """What the labelling job reads: the method, and the k-means settings only where k-means
    may run (so editing them never relabels, and retrains, a corpus labelled from files)."""
    method = label_method(corpus)
    if method == "files":
        return {"method": method}
    return {"method": method, "seed": corpus["seed"], **corpus["label_kmeans"]}


def reference_config(config: dict) -> dict:
    """What the reference-levels job reads: the shared evaluation section's measures and
    utterance count (one corpus, one set of reference levels, whatever an experiment overrides)."""
    evaluation = config["evaluation"]
    return {"measures": list(evaluation["quality_measures"]), "max_utterances": evaluation["reference_utterances"],
            "sample_rate": config["model"]["sample_rate"]}


def check_corpus(config: dict) -> None:
    """Checks of the corpus section that need the file system, made before any job runs."""
    corpus = config["corpus"]
    if corpus["type"] != "folder":
        return
    root = corpus["folder"].get("root")
    if not root:
        raise ConfigError("corpus.folder.root is not set (corpus.type is folder): set it to the folder holding your audio")
    if not Path(root).expanduser().is_dir():
        raise ConfigError(f"corpus.folder.root {root} is not a directory")


def results_dir(config: dict) -> str:
    """Where a config's experiment results go: ``results`` for the default preset on the
    default corpus (so ``results/phase1/verdict.json`` is the paper-size protocol on the
    built-in corpus), ``results/{preset}/{corpus.name}`` for every other pair, so that runs of
    different presets and corpora never overwrite one another."""
    preset, corpus = config.get("preset", DEFAULT_PRESET), config["corpus"]["name"]
    if (preset, corpus) == (DEFAULT_PRESET, DEFAULT_CORPUS):
        return "results"
    return f"results/{preset}/{corpus}"


def compare_dir(config: dict) -> str:
    """Where the comparisons across experiments go: the remedy ladder and the experiments table."""
    return f"{results_dir(config)}/compare"


def ladder_target(config: dict) -> str:
    """The one target that trains, judges and ranks every arm of the remedy ladder."""
    return f"{compare_dir(config)}/remedies.json"


def ab_target(config: dict, name: str) -> str:
    """The A/B comparison ``name`` (a key of the config's ``ab`` section)."""
    return f"{results_dir(config)}/ab/{name}.json"


def snakemake_command(config: dict, target: str) -> str:
    """The command line that builds ``target`` under this config (targets first:
    ``--configfile`` swallows what follows it)."""
    command = f"snakemake --cores all {target}"
    if config.get("preset", DEFAULT_PRESET) != DEFAULT_PRESET or config["corpus"]["name"] != DEFAULT_CORPUS:
        command += " --configfile <this run's config files>"
    return command


def ladder_command(config: dict) -> str:
    """The command line that builds :func:`ladder_target`."""
    return snakemake_command(config, ladder_target(config))


def data_dir(corpus_name: str) -> str:
    """A prepared corpus's folder; shared by every preset that names the corpus."""
    return f"results/data/{corpus_name}"


# The config each rule's command receives: only what changes its output, so that editing a
# key re-runs exactly the jobs that depend on it (Snakemake re-runs a job when its params
# change). Dotted paths pick a sub-key.
RULE_CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "train": ("experiment", "preset", "corpus.name", "corpus.labels", "model", "train"),
    "evaluate": ("experiment", "preset", "corpus.name", "corpus.labels", "model", "evaluation.device",
                 "evaluation.num_conversions", "evaluation.max_validation_utterances", "evaluation.silence_std",
                 "evaluation.quality_measures"),
    "verdict": ("experiment", "preset", "corpus.name", "model.rvq.progressive_steps", "train.steps", "train.scale",
                "train.seed"),
}
# What data preparation reads: the corpus section less the other corpus type's settings and
# the label settings (a change of either must not re-ingest a corpus).
_PREPARE_DROPS = {"builtin": ("folder", "labels", "label_kmeans", "max_clipped_fraction"),
                  "folder": ("builtin", "labels", "label_kmeans")}


def rule_config(resolved: dict, rule: str) -> dict:
    """The part of an experiment's resolved config that ``rule`` uses."""
    out: dict = {}
    for dotted in RULE_CONFIG_KEYS[rule]:
        keys = dotted.split(".")
        src, dst = resolved, out
        for key in keys[:-1]:
            src = src[key]
            dst = dst.setdefault(key, {})
        dst[keys[-1]] = copy.deepcopy(src[keys[-1]])
    return out


def prepare_config(corpus: dict) -> dict:
    """The corpus settings data preparation reads."""
    return {k: copy.deepcopy(v) for k, v in corpus.items() if k not in _PREPARE_DROPS[corpus["type"]]}


def schema_default(dotted: str):
    """The schema's default of a key (``evaluation.silence_std``): its one home, for code that
    has no config at hand."""
    value = validate({})
    for key in dotted.split("."):
        value = value[key]
    return value


def hop_length(model: dict) -> int:
    """Samples per frame: the product of the encoders' strides (320 = 20 ms at 16 kHz). Corpus
    label files and k-means labels are cut to the model's frames, so every rule takes it from here."""
    return math.prod(model["strides"])


def config_hash(section: dict) -> str:
    """Stable short hash of a config section (key order does not matter)."""
    blob = json.dumps(section, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
