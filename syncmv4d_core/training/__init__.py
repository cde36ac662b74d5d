"""Training loop, stages and checkpoints."""
