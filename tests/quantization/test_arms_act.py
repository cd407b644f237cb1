"""Every remedy arm's trick acts within the micro preset's budget (issue 37): after the micro
run, each arm's codebook statistics differ from those of every arm it builds on. An arm equal
to its base to the last digit (phase2_dead_code and phase1 on micro before micro was scaled:
its usage average could not fall under the expiry threshold in 20 steps) measures nothing."""

from __future__ import annotations

import pytest
import torch

from micro import CONFIG_FILES, EVERY_ARM, micro_config
from streamvc_rvq.config import load_config, resolve_experiment
from streamvc_rvq.data.dataset import load_utterances
from streamvc_rvq.evaluation.evaluate import codebook_and_losses
from streamvc_rvq.model.streamvc import StreamVC
from streamvc_rvq.training.checkpoint import load_checkpoint
from streamvc_rvq.training.trainer import train_to_step
from streamvc_rvq.training.scalars_file import read_segment_scalars
from streamvc_rvq.verdict.remedy_ladder import rvq_change, builds_on, trick_evidence

RAW = load_config(*CONFIG_FILES)
ARMS = EVERY_ARM
REFERENCE = "phase1"
CONFIGS = {arm: resolve_experiment(RAW, arm) for arm in ARMS}


@pytest.fixture(scope="module")
def micro_run(micro_manifest, tmp_path_factory):
    """Per arm (trained on demand, once, to the micro run's last step): each stage's
    (perplexity, codes used) over the validation and held-out utterances, and the training
    scalars."""
    cache: dict[str, tuple[list[torch.Tensor], dict]] = {}
    valid = load_utterances(micro_manifest, ["valid", "heldout"])

    def of(arm: str) -> tuple[list[torch.Tensor], dict]:
        if arm not in cache:
            cfg = micro_config(arm)
            step = cfg["train"]["steps"][-1]
            folder = tmp_path_factory.mktemp(arm)
            out = folder / f"step_{step}.pt"
            train_to_step(cfg, manifest=micro_manifest, step=step, output=out, device="cpu",
                          scalars_output=folder / "scalars.json")
            model = StreamVC(cfg["model"])
            model.load_state_dict(load_checkpoint(out)["model"])
            rvq = cfg["model"]["rvq"]
            with torch.no_grad():
                m = codebook_and_losses(model.eval(), valid, rvq["num_quantizers"], rvq["codebook_size"], 16000,
                                        torch.device("cpu"))
            cache[arm] = ([torch.tensor([s["perplexity"], s["codes_used"]]) for s in m["stages"]],
                          read_segment_scalars([folder / "scalars.json"]))
        return cache[arm]

    return of


def test_every_arm_but_the_reference_and_cross_checks_builds_on_something():
    for arm in ARMS:
        bases = builds_on(arm, CONFIGS, REFERENCE)
        implementation = CONFIGS[arm]["model"]["rvq"].get("implementation", "native")
        if arm == REFERENCE or implementation == "vector_quantize_pytorch":
            assert bases == [], (arm, bases)
        else:
            assert bases and all(b in ARMS for b in bases), (arm, bases)
    assert builds_on("phase2_rotation_dead_code", CONFIGS, REFERENCE) == ["phase2_dead_code", "phase2_rotation"]
    assert builds_on("phase2_dead_code", CONFIGS, REFERENCE) == [REFERENCE]


@pytest.mark.parametrize("arm", [a for a in ARMS if builds_on(a, CONFIGS, REFERENCE)])
def test_the_arm_changes_the_codebook_statistics_of_what_it_builds_on(arm, micro_run):
    mine = micro_run(arm)[0]
    for base in builds_on(arm, CONFIGS, REFERENCE):
        theirs = micro_run(base)[0]
        same = len(mine) == len(theirs) and all(torch.equal(a, b) for a, b in zip(mine, theirs))
        assert not same, f"{arm} did not act on micro: its per-stage (perplexity, codes used) equal {base}'s {theirs}"


@pytest.mark.parametrize("arm, tag", [("phase2_dead_code", "redrawn"), ("phase2_rotation", "rotation_angle"),
                                      ("phase2_rotation_stage", "rotation_angle"), ("phase2_simvq", "map_shift"),
                                      ("phase2_affine", "map_shift")])
def test_the_training_scalars_show_the_trick_acting_on_micro(arm, tag, micro_run):
    """What the ladder report reads to say a trick acted, from the real micro run."""
    scalars = micro_run(arm)[1]
    assert any(key.startswith(f"train/rvq_{tag}_q") for key in scalars), sorted(scalars)
    (evidence,) = trick_evidence(rvq_change(CONFIGS[arm], CONFIGS[REFERENCE]), scalars)
    assert evidence["acted"] is True, evidence
