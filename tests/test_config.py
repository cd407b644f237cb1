from pathlib import Path

import pytest
import yaml

from streamvc_rvq.config import (
    ConfigError,
    config_hash,
    deep_merge,
    experiment_names,
    load_config,
    resolve_experiment,
    seed_variants,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "config" / "config.yaml"


def test_default_config_is_the_design_note():
    cfg = resolve_experiment(load_config(DEFAULT), "phase1")
    rvq = cfg["model"]["rvq"]
    assert cfg["model"]["pre_rvq_norm"] == "utterance"
    assert (rvq["commitment_cost"], rvq["progressive_steps"], rvq["num_quantizers"], rvq["codebook_size"]) == (0.5, 2000, 8, 1024)
    train = cfg["train"]
    assert train["grad_clip"] == 1.0 and train["lr"] == 1e-4 and train["betas"] == [0.9, 0.99]
    assert train["batch_size"] == 8 and train["crop_seconds"] == 1.28
    assert train["loss_weights"]["adversarial"] == 0.0 and train["loss_weights"]["feature_matching"] == 0.0
    assert train["steps"] == [1000, 2000, 5000, 10000]


def test_experiments_are_overrides_of_shared_defaults():
    config = load_config(DEFAULT)
    beta1 = resolve_experiment(config, "phase1_beta1")
    phase1 = resolve_experiment(config, "phase1")
    assert beta1["model"]["rvq"]["commitment_cost"] == 1.0
    beta1["model"]["rvq"]["commitment_cost"] = 0.5
    assert beta1["model"] == phase1["model"]  # nothing else differs
    baseline = resolve_experiment(config, "baseline")
    assert baseline["model"]["pre_rvq_norm"] == "none"
    assert baseline["model"]["rvq"]["commitment_cost"] == 0.25
    assert baseline["model"]["rvq"]["progressive_steps"] == 0


def test_quick_and_micro_configs_validate():
    for extra in ("quick.yaml", "micro.yaml"):
        config = load_config(DEFAULT, ROOT / "config" / extra)
        for name in experiment_names(config):
            resolve_experiment(config, name)


def test_unknown_experiment_names_the_known_ones():
    with pytest.raises(ConfigError, match="unknown experiment 'nope'.*phase1"):
        resolve_experiment(load_config(DEFAULT), "nope")


def test_schema_error_names_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": {"rvq": {"distance": "manhattan"}}}))
    with pytest.raises(ConfigError, match=r"model\.rvq\.distance"):
        load_config(DEFAULT, bad)


def test_bad_experiment_override_is_caught_at_resolution(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"experiments": {"oops": {"model": {"pre_rvq_norm": "batch"}}}}))
    config = load_config(DEFAULT, bad)
    with pytest.raises(ConfigError, match=r"config key experiments\.oops\.model\.pre_rvq_norm: 'batch' is not one of"):
        resolve_experiment(config, "oops")


def test_seed_variants_for_ab(tmp_path):
    extra = tmp_path / "seeds.yaml"
    extra.write_text(yaml.safe_dump({"ab": {"commitment_cost": {"arms": ["phase1", "phase1_beta1"], "seeds": [0, 1, 2]}}}))
    config = load_config(DEFAULT, extra)
    assert seed_variants(config, "phase1") == ["phase1", "phase1_s1", "phase1_s2"]
    assert resolve_experiment(config, "phase1_beta1_s2")["train"]["seed"] == 2
    assert "phase1_beta1_s1" in experiment_names(config)


def test_deep_merge_and_hash():
    merged = deep_merge({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": 3}, "d": [2]})
    assert merged == {"a": {"b": 3, "c": 2}, "d": [2]}
    assert config_hash({"x": 1, "y": 2}) == config_hash({"y": 2, "x": 1})
    assert config_hash({"x": 1}) != config_hash({"x": 2})


def test_references_to_undefined_experiments_are_one_line_errors():
    from streamvc_rvq.config import check_references

    config = load_config(DEFAULT)
    check_references(config)
    with pytest.raises(ConfigError, match=r"verdict\.control names experiment 'basline'.*did you mean baseline\?"):
        check_references(deep_merge(config, {"verdict": {"control": "basline"}}))
    with pytest.raises(ConfigError, match=r"ab\.x\.arms names experiment 'nope'"):
        check_references(deep_merge(config, {"ab": {"x": {"arms": ["phase1", "nope"]}}}))


def test_more_kmeans_clusters_than_label_classes_is_refused_before_labelling():
    config = deep_merge(load_config(DEFAULT), {"corpus": {"type": "folder", "label_kmeans": {"num_clusters": 500}}})
    with pytest.raises(ConfigError, match="num_clusters 500 is more than model.content_encoder.num_labels 128"):
        resolve_experiment(config, "phase1")


def test_labelling_reads_kmeans_settings_only_where_kmeans_may_run():
    from streamvc_rvq.config import labels_config

    corpus = load_config(DEFAULT)["corpus"]
    assert labels_config(corpus) == {"method": "files"}  # the built-in corpus has its phonemes
    folder = deep_merge(corpus, {"type": "folder"})
    assert labels_config(folder) == {"method": "auto", "seed": 1234, "num_clusters": 100, "max_frames": 200000,
                                     "iterations": 50}


def test_verdict_seeds_and_fidelity_variants_and_their_controls():
    from streamvc_rvq.config import control_of, seed_runs

    config = load_config(DEFAULT, ROOT / "config" / "quick.yaml", ROOT / "config" / "confidence.yaml")
    names = experiment_names(config)
    assert {"phase1_s1", "phase1_s2", "phase1_x2", "baseline_x2"} <= set(names)
    assert "baseline_s1" not in names  # the control runs once
    assert seed_runs(config, "phase1") == ["phase1_s1", "phase1_s2"] and seed_runs(config, "phase1_s1") == []
    assert control_of(config, "phase1") == "baseline" and control_of(config, "phase1_x2") == "baseline_x2"
    assert control_of(config, "baseline") is None and control_of(config, "baseline_x2") is None


def test_fidelity_beyond_the_paper_size_protocol_is_refused():
    config = load_config(DEFAULT)
    config["verdict"]["fidelity_times"] = 2
    with pytest.raises(ConfigError, match=r"phase1_x2: train.scale x 2 = 2 is more than the paper-size protocol"):
        resolve_experiment(config, "phase1_x2")


def _schema_has(schema: dict, dotted: str) -> bool:
    node = schema
    for part in dotted.split("."):
        if part in (node.get("properties") or {}):
            node = node["properties"][part]
        elif isinstance(node.get("additionalProperties"), dict):  # experiments.<name>
            node = node["additionalProperties"]
        else:
            return False
    return True


def test_the_schema_has_one_home_and_config_readme_names_only_keys_it_defines():
    """config/schema.yaml is the package's schema (a link, not a copy that drifts), and every dotted
    key config/README.md names is one the schema defines."""
    import re

    root = Path(__file__).resolve().parents[1]
    package_schema = root / "src" / "streamvc_rvq" / "schema.yaml"
    assert (root / "config" / "schema.yaml").resolve() == package_schema.resolve()
    schema = yaml.safe_load(package_schema.read_text())
    sections = "|".join(schema["properties"])
    named = set(re.findall(rf"`((?:{sections})\.[a-z0-9_.]+?)`", (root / "config" / "README.md").read_text()))
    named = {key for key in named if not key.endswith((".json", ".yaml"))}
    assert len(named) > 10
    assert [key for key in sorted(named) if not _schema_has(schema, key)] == []
    assert not _schema_has(schema, "model.rvq.no_such_key")  # the check can fail
