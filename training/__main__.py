"""``python -m training pretrain|export``."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    pre = sub.add_parser("pretrain", help="supervised pre-training of the ResNet18 backbone")
    pre.add_argument("--data", type=Path, default=Path("../shared/data"))
    pre.add_argument("--out", type=Path, default=Path("runs/pretrain"))
    pre.add_argument("--input-size", type=int, default=128)
    pre.add_argument("--epochs", type=int, default=12)
    pre.add_argument("--imagenet-weights", action="store_true",
                     help="start from torchvision's ImageNet weights (needs them downloaded)")
    exp = sub.add_parser("export", help="export a checkpoint as a model bundle")
    exp.add_argument("checkpoint", type=Path)
    exp.add_argument("--data", type=Path, default=Path("../shared/data"))
    exp.add_argument("--out", type=Path, required=True)
    exp.add_argument("--algorithm", default="baseline")
    exp.add_argument("--keep-fp32", action="store_true", help="keep the fp32 backbone beside the int8 one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.command == "pretrain":
        from training.pretrain import PretrainConfig, pretrain
        pretrain(PretrainConfig(args.data, args.out, args.input_size, args.epochs,
                                imagenet_weights=args.imagenet_weights))
    elif args.command == "export":
        from training.export import export_bundle
        export_bundle(args.checkpoint, args.data, args.out, args.algorithm, args.keep_fp32)
    return 0


if __name__ == "__main__":
    sys.exit(main())
