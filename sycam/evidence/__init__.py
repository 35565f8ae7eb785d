"""Evidence capture: what the model says about a batch, computed once and reused by every expression."""
