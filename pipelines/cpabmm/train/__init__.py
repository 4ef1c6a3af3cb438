"""Training CPABMM (spec cpab.md §2.4-2.6): configs, losses, datasets, the engine, evaluation."""
from .configs import TRAIN_CONFIGS, dropout_p, train_config
from .data import FramesDataset, Repeated
from .synthetic import SyntheticMotion

__all__ = ["FramesDataset", "Repeated", "SyntheticMotion", "TRAIN_CONFIGS", "dropout_p", "train_config"]
