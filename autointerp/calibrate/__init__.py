"""Labels checked against the truth: plant gold features whose meaning is known (rules.py, plant.py), grade
every scorer's and explainer's labels of them against the true description and its near misses (run.py),
and say how far each can be trusted (metrics.py). `autointerp calibrate` runs it."""

from .plant import GOLD, Planted, plant
from .rules import BUILTIN, CATEGORIES, Rule, load_rules
from .run import CalibrateConfig, Calibration, Grade, calibrate

__all__ = ["BUILTIN", "CATEGORIES", "GOLD", "CalibrateConfig", "Calibration", "Grade", "Planted", "Rule", "calibrate",
           "load_rules", "plant"]
