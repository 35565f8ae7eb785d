"""Image sets, annotations, the offline asset fetcher and the default benchmark."""
from .batch import Batch

__all__ = ["Batch"]
