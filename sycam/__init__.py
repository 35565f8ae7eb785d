"""sycam: synthesise, evaluate and ablate Class Activation Map expressions."""
from .api import CAM, Explanation, explain
from .errors import SycamError
from .evidence.capture import Evidence, capture
from .evidence.targets import ClassLogit, ClassProbability, FinerContrast
from .grammar import parse, to_text
from .methods import SEEDS, get_seed

__version__ = "0.1.0"
__all__ = ["CAM", "Explanation", "explain", "SycamError", "Evidence", "capture", "ClassLogit",
           "ClassProbability", "FinerContrast", "parse", "to_text", "SEEDS", "get_seed"]
