"""The seed library: known CAM methods as sentences of the language."""
from .seeds import META_METHODS, SEEDS, MetaMethod, Recipe, Seed, get_meta, get_seed, resolve_method

__all__ = ["SEEDS", "Seed", "Recipe", "get_seed", "resolve_method", "META_METHODS", "MetaMethod", "get_meta"]
