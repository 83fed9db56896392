"""One rank of a two-process data-parallel meta-training run on the toy task (launched by torchrun
from ``test_training.py``); each rank samples its own tasks."""
import os
import sys
from pathlib import Path

import torch

from tests.training.toy import toy_pool
from training.algorithms import MetaConfig
from training.train import TrainConfig, meta_train

torch.set_num_threads(1)
rank = int(os.environ["RANK"])
cfg = TrainConfig("anil", Path(sys.argv[1]), input_size=32, steps=4, meta_batch=1, way=3, shot=2, queries=2,
                  log_every=2, checkpoint_every=2, meta=MetaConfig(inner_steps=2, batchnorm="batch"))
meta_train(cfg, toy_pool(per_class=6, seed=rank))
