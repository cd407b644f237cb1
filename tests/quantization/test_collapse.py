"""The collapse mechanism of the design note, reproduced on hand-made features.

Encoder features with std 0.31 against a fresh N(0, 1) codebook of 1024 codes: in
||x||^2 - 2 x.e + ||e||^2 the ||e||^2 term dominates, so a few small-norm codes win most
searches. Normalising the features to std 1 (utterance or causal) restores the competition.
Run with ``pytest -s`` to see the measured numbers.
"""

import torch

from streamvc_rvq.quantization.normalization import PreRVQNorm
from streamvc_rvq.quantization.rvq import ResidualVectorQuantizer

B, D, T = 8, 64, 64
NUM_CENTRES, RANK = 64, 16


def structured_features() -> torch.Tensor:
    """Low-rank mixture: cluster centres in a random RANK-dim subspace of R^D, within-cluster
    spread, small isotropic noise; scaled to overall std 0.31 (the collapsed encoder's)."""
    basis = torch.linalg.qr(torch.randn(D, RANK))[0]  # D x RANK, orthonormal columns
    centres = 2.0 * torch.randn(NUM_CENTRES, RANK)
    labels = torch.randint(0, NUM_CENTRES, (B, T))
    latent = centres[labels] + torch.randn(B, T, RANK)
    x = latent @ basis.t() + 0.1 * torch.randn(B, T, D)  # B x T x D
    x = x.transpose(1, 2)
    return x * (0.31 / x.std())


def test_normalisation_breaks_the_single_code_monopoly():
    x = structured_features()
    rvq = ResidualVectorQuantizer(num_quantizers=1, codebook_size=1024, codebook_dim=D).eval()
    measured = {}
    for mode in ("none", "utterance", "causal"):
        y = PreRVQNorm(mode)(x)
        stage0 = rvq(y).stats[0]
        measured[mode] = (float(y.std()), stage0)
        print(
            f"\n[collapse] {mode:9s} std={float(y.std()):.3f} "
            f"top_code_share={stage0['top_code_share']:.3f} perplexity={stage0['perplexity']:.1f} "
            f"usage={stage0['usage']:.3f}",
            end="",
        )

    assert abs(measured["none"][0] - 0.31) < 1e-3
    top = {mode: stats["top_code_share"] for mode, (_, stats) in measured.items()}
    assert top["none"] > 3 * top["utterance"]
    assert top["none"] > 3 * top["causal"]
    for mode in ("utterance", "causal"):
        assert 0.9 <= measured[mode][0] <= 1.1
        assert measured[mode][1]["perplexity"] > 3 * measured["none"][1]["perplexity"]
