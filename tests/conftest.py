"""Shared test settings: one torch thread (CI has 2 cores), deterministic seeds."""

import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def micro_manifest(tmp_path_factory):
    """The micro built-in corpus, synthesised once for the whole session."""
    from micro import micro_config
    from streamvc_rvq.data.prepare import prepare_corpus

    out = tmp_path_factory.mktemp("micro_corpus")
    prepare_corpus(micro_config()["corpus"], out)
    return out / "manifest.csv"
