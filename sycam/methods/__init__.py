"""The seed library: known CAM methods as sentences of the language."""
from .seeds import SEEDS, Seed, get_seed, resolve_method

__all__ = ["SEEDS", "Seed", "get_seed", "resolve_method"]
