"""One inference room: loading a trained model and converting audio with it (offline, streaming, a file)."""
