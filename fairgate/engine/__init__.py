"""Where batches come from and how their partial results merge."""
