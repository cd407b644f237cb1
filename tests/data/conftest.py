"""Fixtures of the data tests: one tiny built-in corpus, built once per session."""

from __future__ import annotations

import pytest

from streamvc_rvq.data.prepare import prepare_corpus

# 5 speakers x 3 utterances, ~1 min of speech: builds in a few seconds on 2 cores.
TINY_BUILTIN = {
    "name": "tiny",
    "type": "builtin",
    "seed": 7,
    "held_out_speakers": 1,
    "validation_fraction": 0.2,
    "min_files": 8,
    "min_speakers": 4,
    "builtin": {"num_speakers": 5, "num_sentences": 12, "minutes": 1.0},
}


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_corpus")
    summary = prepare_corpus(TINY_BUILTIN, out, workers=2, progress=False)
    return out, summary


@pytest.fixture
def tiny_builtin_config():
    return dict(TINY_BUILTIN, builtin=dict(TINY_BUILTIN["builtin"]))
