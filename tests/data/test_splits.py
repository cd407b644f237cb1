"""Splits: a pure function; held-out speakers only in heldout; every utterance in one split."""

import pytest

from streamvc_rvq.data.splits import SplitError, assign_splits, choose_held_out


def _corpus(num_speakers=10, per_speaker=(1, 2, 5, 20, 40)):
    utts = {}
    for s in range(num_speakers):
        for k in range(per_speaker[s % len(per_speaker)]):
            utts[f"s{s:02d}_{k:03d}"] = f"s{s:02d}"
    return utts


def test_every_utterance_in_exactly_one_split_and_held_out_speakers_isolated():
    utts = _corpus()
    splits = assign_splits(utts, held_out_speakers=3, validation_fraction=0.1, seed=5)
    assert splits.keys() == utts.keys()
    assert set(splits.values()) == {"train", "valid", "heldout"}
    held = choose_held_out(utts.values(), 3, 5)
    assert held == sorted(held) and len(held) == 3
    by_split = {name: {utts[u] for u, s in splits.items() if s == name} for name in ("train", "valid", "heldout")}
    assert by_split["heldout"] == set(held)
    assert by_split["train"].isdisjoint(held) and by_split["valid"].isdisjoint(held)
    for spk in set(utts.values()) - set(held):
        mine = [splits[u] for u in utts if utts[u] == spk]
        n_valid = mine.count("valid")
        if len(mine) == 1:
            assert mine == ["train"]  # a single utterance stays for training
        else:
            assert n_valid == min(len(mine) - 1, max(1, round(0.1 * len(mine))))
            assert mine.count("train") >= 1


def test_deterministic_order_independent_and_seeded():
    utts = _corpus()
    a = assign_splits(utts, 2, 0.2, seed=1)
    b = assign_splits(list(reversed(list(utts.items()))), 2, 0.2, seed=1)
    assert a == b
    assert a != assign_splits(utts, 2, 0.2, seed=2)


def test_held_out_needs_a_training_speaker():
    utts = _corpus(num_speakers=3)
    with pytest.raises(SplitError):
        assign_splits(utts, 3, 0.1, seed=0)
    assert len(set(assign_splits(utts, 2, 0.1, seed=0).values())) >= 2


def test_preparation_describes_the_split_and_warns_when_held_out_speakers_take_much_audio(tiny_corpus):
    from streamvc_rvq.data.prepare import describe_splits

    _, summary = tiny_corpus
    table = summary["split_table"]
    assert sum(t["utterances"] for t in table.values()) == summary["num_utterances"]
    assert table["heldout"]["speakers"] == 1 and table["train"]["speakers"] == 4
    lines = describe_splits(summary)
    assert lines[0].startswith("split: train 4 speakers") and "heldout 1 speaker," in lines[0]
    ten = {"num_speakers": 10, "split_table": {
        "train": {"speakers": 6, "utterances": 57, "minutes": 5.7},
        "valid": {"speakers": 6, "utterances": 3, "minutes": 0.3},
        "heldout": {"speakers": 4, "utterances": 40, "minutes": 4.0}}}
    assert describe_splits(ten)[1].startswith("note: 4 of 10 speakers (40% of the audio) are held out")
