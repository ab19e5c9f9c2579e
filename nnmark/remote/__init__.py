"""Serving a model over the Open Inference Protocol v2, and verifying one from its answers."""
