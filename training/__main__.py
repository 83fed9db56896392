"""``python -m training pretrain|distill|meta-train|evaluate|export|add-patch-features``."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from inspector.errors import InspectorError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description="The model makers' side of inspector: "
                                     "pre-train, meta-train, evaluate and export the backbone.")
    sub = parser.add_subparsers(dest="command", required=True)
    pre = sub.add_parser("pretrain", help="supervised pre-training of the ResNet18 backbone")
    pre.add_argument("--data", type=Path, default=Path("../shared/data"))
    pre.add_argument("--out", type=Path, default=Path("runs/pretrain"))
    pre.add_argument("--input-size", type=int, default=128)
    pre.add_argument("--epochs", type=int, default=12)
    pre.add_argument("--imagenet-weights", action="store_true",
                     help="start from torchvision's ImageNet weights (needs them downloaded)")
    dis = sub.add_parser("distill", help="distil the ImageNet EfficientNet-Lite0 teacher into the ResNet18 backbone "
                         "(function matching; rerun the same command to resume)")
    dis.add_argument("--data", type=Path, default=Path("../shared/data"))
    dis.add_argument("--out", type=Path, default=Path("runs/distill"))
    dis.add_argument("--init-from", type=Path, help="a checkpoint or a model bundle folder to start the student "
                                                     "from (default: from scratch)")
    dis.add_argument("--sources", default="broad_corpus,track_scene,overhead_line",
                     help="comma-separated image sources among broad_corpus, track_scene, overhead_line, rail_crops "
                          "(the rail sets' training crops) (default: %(default)s)")
    dis.add_argument("--input-size", type=int, default=128)
    dis.add_argument("--epochs", type=int, default=40, help="passes over the images (default: %(default)s)")
    dis.add_argument("--batch-size", type=int, default=64)
    dis.add_argument("--lr", type=float, default=1e-3)
    dis.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                     help="bf16 autocast (AMX CPUs, GPUs) or fp32 (default)")
    dis.add_argument("--checkpoint-minutes", type=float, default=5.0)
    dis.add_argument("--map-weight", type=float, default=0.5,
                     help="weight of matching the teacher's stride-8/16 maps (patch features; 0: pooled only)")
    dis.add_argument("--teacher-size", type=int, action="append", default=[],
                     help="the teacher sees each view resized to this many px, e.g. 224, its ImageNet scale "
                          "(default: the input size); repeat for several scales, taken in turn, each with its own "
                          "projection heads")
    dis.add_argument("--threads", type=int, default=2, help="CPU threads (default: %(default)s)")
    dis.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when there is one)")
    meta = sub.add_parser("meta-train", help="episodic meta-training (MAML, FOMAML, ANIL, Reptile, ProtoNet, Matching)")
    meta.add_argument("--config", type=Path, required=True, help="a TOML file such as training/configs/anil.toml")
    meta.add_argument("--steps", type=int, help="override the number of meta-steps")
    meta.add_argument("--out", type=Path, help="override the output folder")
    meta.add_argument("--data", type=Path, help="override the data folder")
    meta.add_argument("--init-from", type=Path, help="override the starting backbone (a checkpoint or a bundle folder)")
    meta.add_argument("--exclude-domain", action="append", default=[], metavar="DOMAIN",
                      help="leave a whole domain out (leave-one-domain-out evaluation); repeatable")
    meta.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when there is one)")
    pat = sub.add_parser("add-patch-features", help="give a bundle's backbones the patch output of anomaly mode "
                         "(its embeddings, heads and scans stay valid)")
    pat.add_argument("bundle", type=Path, help="a model bundle folder")
    exp = sub.add_parser("export", help="export a checkpoint as a model bundle")
    exp.add_argument("checkpoint", type=Path)
    exp.add_argument("--data", type=Path, default=Path("../shared/data"))
    exp.add_argument("--out", type=Path, required=True)
    exp.add_argument("--algorithm", default="baseline")
    exp.add_argument("--keep-fp32", action="store_true", help="keep the fp32 backbone beside the int8 one")
    exp.add_argument("--evaluation", type=Path, help="few-shot results to record in the provenance: the JSON of "
                                                     "bench/algorithm_table.py (with --column) or of evaluate --out")
    exp.add_argument("--column", help="the table column that is this checkpoint")
    ev = sub.add_parser("evaluate", help="N-way K-shot accuracy of a checkpoint (torch), with a 95%% CI")
    ev.add_argument("checkpoint", type=Path)
    ev.add_argument("dataset", type=Path)
    ev.add_argument("--way", type=int, required=True)
    ev.add_argument("--shot", type=int, required=True)
    ev.add_argument("--queries", type=int, default=15)
    ev.add_argument("--episodes", type=int, default=600)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--bundle", type=Path, help="take the adaptation parameters from this bundle (default: the "
                                                "checkpoint's meta-learned ones, else the shipped bundle's)")
    ev.add_argument("--holdout-groups", type=float)
    ev.add_argument("--split-seed", type=int, default=0)
    ev.add_argument("--group-column", default="group")
    ev.add_argument("--classes", help="comma-separated classes to keep")
    ev.add_argument("--out", type=Path, help="write the JSON result here too")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.command == "pretrain":
        from training.pretrain import PretrainConfig, pretrain
        pretrain(PretrainConfig(args.data, args.out, args.input_size, args.epochs,
                                imagenet_weights=args.imagenet_weights))
    elif args.command == "distill":
        from training.distill import DistillConfig, distill
        cfg = DistillConfig(args.data, args.out, args.init_from, tuple(args.sources.split(",")), args.input_size,
                            args.epochs, args.batch_size, args.lr, checkpoint_minutes=args.checkpoint_minutes,
                            precision=args.precision, threads=args.threads, device=args.device,
                            map_weight=args.map_weight, teacher_sizes=tuple(args.teacher_size))
        print(f"wrote {distill(cfg)}")
    elif args.command == "meta-train":
        from training.train import TrainConfig, meta_train

        try:
            cfg = TrainConfig.from_toml(args.config, steps=args.steps, out_dir=args.out, data_root=args.data,
                                        init_from=args.init_from, exclude=tuple(args.exclude_domain) or None,
                                        device=args.device)
        except (OSError, ValueError, TypeError) as exc:  # a missing or malformed config file
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {meta_train(cfg)}")
    elif args.command == "evaluate":
        from inspector.bundle import load_bundle
        from training.evaluate import checkpoint_adaptation, evaluate_checkpoint, write_result

        learned = None if args.bundle is not None else checkpoint_adaptation(args.checkpoint)
        params = learned or load_bundle(args.bundle).adaptation
        classes = args.classes.split(",") if args.classes else None
        result = evaluate_checkpoint(args.checkpoint, args.dataset, args.way, args.shot, args.queries,
                                     args.episodes, params, args.seed, args.holdout_groups, args.group_column,
                                     classes, args.split_seed)
        print(f"{args.way}-way {args.shot}-shot: accuracy {result.accuracy:.2f} % +- {result.ci95:.2f} % (95 % CI)")
        print(write_result(result, args.out, {"checkpoint": str(args.checkpoint)}))
    elif args.command == "export":
        from training.export import export_bundle
        fewshot = None
        if args.evaluation is not None:
            import json

            raw = json.loads(args.evaluation.read_text())
            fewshot = ({row: cells[args.column] for row, cells in raw["results"].items()} if args.column
                       else {k: raw[k] for k in ("way", "shot", "accuracy", "ci95", "episodes")})
        export_bundle(args.checkpoint, args.data, args.out, args.algorithm, args.keep_fp32, fewshot)
    elif args.command == "add-patch-features":
        from training.patch_features import add_to_bundle
        try:
            features = add_to_bundle(args.bundle)
        except (InspectorError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"{args.bundle}: patch features {features.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
