"""StreamVC with a residual vector quantizer: model, training and the Phase 1 collapse protocol."""

__version__ = "0.1.0"
