"""Command line: ``autocomp search | report | export | spaces``.

A user's mistake prints one line ``autocomp: error: ...`` and exits 2; Ctrl-C exits 130.
Heavy imports (torch, optuna, plotly) happen inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from autocomp.errors import AutocompError

SEARCH_FLAGS = [  # (flag, type, help); defaults live in SearchConfig, flags override a --config file
    ("--model", str, "digits_cnn | lenet5 | lenet300 | torchvision:NAME | module:callable | file.py:callable"),
    ("--model-kwargs", str, "KEY=VALUE,... passed to the model's builder, values read as YAML "
     "(e.g. image_size=32 for torchvision:vit_b_16 on 32-px inputs)"),
    ("--checkpoint", str,
     "state dict for the model (loaded with weights_only=True); without it the teacher is trained and cached"),
    ("--weights", str, "torchvision weights of a torchvision:NAME model (DEFAULT, IMAGENET1K_V1 ...), read from the "
     "local torch hub cache ($TORCH_HOME/hub/checkpoints), never downloaded; sets the preprocessing too"),
    ("--dataset", str,
     "digits (builtin, offline) | mnist | cifar10 | torchvision:NAME | ImageFolder dir | module:callable"),
    ("--data-dir", str, "root directory of a torchvision dataset"),
    ("--image-size", int, "model input SIZE x SIZE: resize (shorter side) + center crop to SIZE; required for "
     "image folders of mixed sizes (default with --weights: the weights' own, e.g. 224)"),
    ("--resize", int, "resize the shorter side to this before the center crop (default: SIZE, or SIZE*256/224 "
     "with --weights)"),
    ("--mean", str, "normalization mean per channel, e.g. 0.485,0.456,0.406 (default: the weights' own with "
     "--weights, else computed from a sample of training images)"),
    ("--std", str, "normalization std per channel, e.g. 0.229,0.224,0.225 (with --mean)"),
    ("--augment", str, "fine-tune augmentation: none | light (random-resized crop 35-100%% + flip) | standard "
     "(8-100%% + flip); default standard for photo datasets (image folders, CIFAR), none otherwise"),
    ("--workers", int, "DataLoader worker processes that read and preprocess streamed images (default: cores - 1, "
     "at most 8; 0 = in the main process)"),
    ("--channels", int, "convert images to 1 or 3 channels"),
    ("--train-samples", int, "use at most N training samples (a seeded subset)"),
    ("--val-samples", int, "rank trials on a fixed seeded subset of N validation samples; `autocomp export` "
     "re-measures on the whole validation split"),
    ("--teacher-epochs", int, "epochs to train the teacher when no checkpoint is given (default 30)"),
    ("--space", str, "search space: a shipped name (see `autocomp spaces list`) or a YAML file (default: default)"),
    ("--n-trials", int, "trials to add in this run (default 50); running again adds more to the same study"),
    ("--timeout", float, "stop starting trials after this many seconds"),
    ("--trial-timeout", float, "fail a trial that runs longer than this many seconds"),
    ("--sampler", str, "tpe (default) | nsga2 | random"),
    ("--seed", int, "seed for the teacher, fine-tunes and sampler (default 0)"),
    ("--storage", str, "Optuna storage URL (default sqlite:///RUN_DIR/study.db); postgresql://... or journal:FILE"),
    ("--study-name", str, "study name (default MODEL-DATASET, e.g. resnet18-mnist or my_vit.build-mnist for "
     "my_vit.py:build); the same name resumes the same study"),
    ("--run-dir", str, "where the report, trials table and artifacts go (default runs/STUDY_NAME)"),
    ("--device", str, "cpu (default) or cuda[:N] for fine-tuning; accuracy and latency are measured on --runtime"),
    ("--train-threads", int, "torch threads for teacher training and fine-tunes (default: torch's choice); "
     "1 is fastest on a busy machine"),
    ("--batch", int, "batch size of the latency measurement (default 1)"),
    ("--threads", int, "the runtime's intra-op threads for latency (default 1)"),
    ("--runtime", str, "where each trial's accuracy and latency are measured: onnxruntime (default, CPU), openvino "
     "(CPU; pip install -e \".[openvino]\"), tensorrt (NVIDIA GPU; pip install -e \".[tensorrt]\")"),
    ("--precision", str, "float parts on the runtime: fp32 (default, also where the runtime would pick less), or "
     "the runtime's reduced bf16 | fp16; int8 layers run int8 either way"),
    ("--heartbeat", int, "seconds between a running trial's heartbeats; a trial silent for 3x this is failed "
     "and retried by the next run (default 10)"),
    ("--baselines", str, "comma list of fixed trials enqueued in a new study: teacher,int8,int4,prune50,prune90,"
     "svd50,channels50"),
]


def _search(args: argparse.Namespace) -> int:
    from autocomp.api import run_search
    from autocomp.config import SearchConfig, parse_numbers, read_config_file

    settings = read_config_file(args.config) if args.config else {}
    for flag, _, _ in SEARCH_FLAGS:
        key = flag[2:].replace("-", "_")
        value = getattr(args, key)
        if value is not None:
            settings[key] = tuple(v.strip() for v in value.split(",") if v.strip()) if key == "baselines" else value
            if key in ("mean", "std"):
                settings[key] = parse_numbers(flag, value)
    if args.download:
        settings["download"] = True
    if args.no_keep_artifacts:
        settings["keep_artifacts"] = False
    if args.allow_empty_space:
        settings["allow_empty_space"] = True
    run_search(SearchConfig(**settings), progress=not args.no_progress)
    return 0


def _report(args: argparse.Namespace) -> int:
    from autocomp.report import write_report
    from autocomp.report.recommend import recommend_text
    from autocomp.study.create import load_existing_study

    study = load_existing_study(args.storage, args.study_name)
    limits = {"max_drop": args.max_drop, "max_size": args.max_size, "max_latency": args.max_latency,
              "prefer": args.prefer}
    paths = write_report(study, args.out, storage=args.storage, **limits)
    print(f"report: {paths['html']}\ntrials table: {paths['csv']}")
    print(recommend_text(study, args.storage, **limits))
    return 0


def _export(args: argparse.Namespace) -> int:
    from autocomp.export.trial import export_trial
    from autocomp.pipeline.setup import task_bar

    card = export_trial(args.storage, args.study_name, args.trial, args.out, args.format, args.epochs, args.steps,
                        progress=None if args.no_progress else task_bar)
    print(card)
    return 0


def _spaces(args: argparse.Namespace) -> int:
    from autocomp.cli import spaces as spaces_cli

    return spaces_cli.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autocomp",
        description="Search per-layer pruning, quantization, low rank and distillation for a PyTorch model. "
        "Every point is measured on the artifact you ship.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("search", help="run (or resume) a compression search and write its report",
                       description="Run or resume a search. With no arguments: the builtin digits CNN on "
                       "scikit-learn's digits, 50 trials, offline.")
    s.add_argument("--config", help="YAML file holding any of the settings below (flags override it)")
    for flag, kind, text in SEARCH_FLAGS:
        s.add_argument(flag, type=kind, default=None, help=text)
    s.add_argument("--download", action="store_true", help="allow torchvision to download the dataset")
    s.add_argument("--no-keep-artifacts", action="store_true",
                   help="do not keep each trial's artifact in RUN_DIR/artifacts")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--allow-empty-space", action="store_true",
                   help="run even when the space searches no dimension of the model (refused otherwise)")
    s.set_defaults(func=_search)

    r = sub.add_parser("report", help="write the HTML report and tables of a study; recommend a point")
    r.add_argument("--storage", required=True, help="Optuna storage URL of the study")
    r.add_argument("--study-name", required=True, help="study name")
    r.add_argument("--out", required=True, help="output directory")
    r.add_argument("--max-drop", type=float, default=1.0, help="largest accuracy drop in points (default 1.0)")
    r.add_argument("--max-size", type=int, default=None, help="largest artifact size in bytes")
    r.add_argument("--max-latency", type=float, default=None, help="largest latency in ms")
    r.add_argument("--prefer", choices=["size", "latency", "accuracy"], default="size",
                   help="what 'best' means among the points within the limits (default size)")
    r.set_defaults(func=_report)

    e = sub.add_parser("export", help="rebuild a trial from its stored Plan and write its artifact and card")
    e.add_argument("--storage", required=True, help="Optuna storage URL of the study")
    e.add_argument("--study-name", required=True, help="study name")
    e.add_argument("--trial", type=int, required=True, help="trial number")
    e.add_argument("--out", required=True,
                   help="file to write; its extension picks the format: .acz (the artifact the study measured), "
                   ".onnx (expanded plain ONNX), .xml (OpenVINO IR, NAME.bin beside it, measured on OpenVINO), "
                   ".pt (TorchScript)")
    e.add_argument("--format", default=None, choices=["acz", "onnx", "openvino", "torchscript", "state_dict"],
                   help="only needed for state_dict (.pt); must agree with --out's extension")
    e.add_argument("--epochs", type=float, default=None,
                   help="continue the trial's fine-tune (same Plan) for this many more epochs before export; "
                   "the card then records the search-time and the final accuracy")
    e.add_argument("--steps", type=int, default=None, help="as --epochs, in optimizer steps")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.set_defaults(func=_export)

    sp = sub.add_parser("spaces", help="list, show and check search spaces")
    spsub = sp.add_subparsers(dest="spaces_command", required=True, metavar="ACTION")
    spsub.add_parser("list", help="shipped search spaces")
    show = spsub.add_parser("show", help="print a shipped space's YAML")
    show.add_argument("name")
    check = spsub.add_parser("check", help="validate a space against a model: layers per rule, dimensions, warnings")
    check.add_argument("file", help="a YAML file or a shipped name")
    check.add_argument("--model", default="digits_cnn", help="model spec as for search (default digits_cnn)")
    check.add_argument("--input-shape", default=None, help="C,H,W of the model input (default from the model)")
    check.add_argument("--num-classes", type=int, default=10)
    check.add_argument("--model-kwargs", default=None, help="KEY=VALUE,... passed to the model's builder")
    sp.set_defaults(func=_spaces)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # OpenMP threads that spin while waiting collapse when the cores are shared (a fine-tune
    # ran 40 s instead of 6 s on a loaded 2-core machine); sleeping threads degrade gracefully.
    # Set before torch is imported; a user's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except AutocompError as exc:
        print(f"autocomp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autocomp: interrupted; finished trials are kept", file=sys.stderr)
        return 130

