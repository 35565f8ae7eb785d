"""Methods: the seed library (known CAM methods as sentences of the language, loaded here without
torch) and, in their own modules, what binds a method to a model: the :class:`~.explainer.Explainer`
protocol, :class:`~.cam.CAM`, the meta-methods (:mod:`.gpnn_cam`, :mod:`.metacam`) and
:func:`~.build.make_cam`, which builds any of them by name."""
from .seeds import META_METHODS, SEEDS, MetaMethod, Recipe, Seed, get_meta, get_seed, resolve_method

__all__ = ["SEEDS", "Seed", "Recipe", "get_seed", "resolve_method", "META_METHODS", "MetaMethod", "get_meta"]
