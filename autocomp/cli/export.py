"""``autocomp export``: rebuild one trial from its stored Plan, write its artifact and card."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    e.add_argument("--force", action="store_true",
                   help="replace --out (and its card, and an IR's .bin) when it already exists; refused otherwise")
    e.add_argument("--measure-on", default=None, metavar="URL",
                   help="time the exported file on this device, ssh://[user@]host[:port], or `here` on this "
                   "machine (default: where the study timed its trials; docs/devices.md)")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autocomp.export.trial import export_trial
    from autocomp.pipeline.setup import task_bar

    card = export_trial(args.storage, args.study_name, args.trial, args.out, args.format, args.epochs, args.steps,
                        progress=None if args.no_progress else task_bar, force=args.force,
                        measure_on=args.measure_on)
    print(card)
    return 0
