"""Meta-learning algorithms behind one interface (``MetaLearner``); ``make`` builds one by name.

Baseline (plain supervised pre-training of the backbone) is ``training.pretrain``.
"""
from __future__ import annotations

from training.algorithms.base import Algorithm, MetaConfig, MetaLearner
from training.algorithms.gradient import GradientMetaLearner
from training.algorithms.metric import MatchingNetwork, PrototypicalNetwork
from training.algorithms.reptile import Reptile
from training.backbone import EmbeddingNet


def make(algorithm: str | Algorithm, net: EmbeddingNet, cfg: MetaConfig) -> MetaLearner:
    algorithm = Algorithm(algorithm)
    if algorithm in (Algorithm.MAML, Algorithm.FOMAML, Algorithm.ANIL):
        return GradientMetaLearner(net, cfg, algorithm)
    if algorithm is Algorithm.REPTILE:
        return Reptile(net, cfg)
    if algorithm is Algorithm.PROTONET:
        return PrototypicalNetwork(net, cfg)
    return MatchingNetwork(net, cfg)


__all__ = ["Algorithm", "MetaConfig", "MetaLearner", "make"]
