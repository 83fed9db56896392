"""Model makers' side of inspector: datasets, meta-learning, evaluation and bundle export.

Needs the ``train`` extra (torch, torchvision). The runtime package never imports this one.
"""
