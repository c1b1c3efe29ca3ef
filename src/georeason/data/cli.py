"""`georeason data ...`: dataset tools (`check` validates a dataset folder; `merge-masks` adds masks).

Implements the tooling around the dataset layouts (docs/released_code.md#datasets, docs/data.md); each sub-subcommand
is one small add/run pair.
"""

from __future__ import annotations

import argparse
import json

CLI_DESCRIPTION = "Dataset tools: validate a dataset folder (check), merge externally drawn masks (merge-masks)."
CLI_EPILOG = """examples:
  georeason data check /data/EarthReason
  georeason data check /data/RRSIS-D --split val --json
  georeason data check synth-out --quick
  georeason data merge-masks my-dataset qgis-masks/ --split train
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    subparsers = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    parser.set_defaults(_data_parser=parser)
    _add_check(subparsers)
    _add_merge_masks(subparsers)


def run(args: argparse.Namespace) -> int:
    handler = getattr(args, "handler", None)
    if handler is None:
        args._data_parser.print_help()
        return 2
    return int(handler(args) or 0)


# -- check -----------------------------------------------------------------------------------------
def _add_check(subparsers: argparse._SubParsersAction) -> None:
    check = subparsers.add_parser(
        "check", help="validate a dataset folder and print a summary",
        description="Detect the layout (EarthReason, RRSIS-D, RefSegRS, JSONL), read every sample and "
                    "print counts per split, empty targets, image sizes, question/answer counts and "
                    "every problem found. Exit code 1 when there are problems.",
        epilog="example: georeason data check /data/EarthReason --split val",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("path", help="dataset folder (or a .jsonl manifest)")
    check.add_argument("--split", action="append", help="split to check (repeatable; default: all present)")
    check.add_argument("--quick", action="store_true", help="only check the file listing and annotations, "
                                                            "do not decode images and masks")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(handler=_run_check)


def _run_check(args: argparse.Namespace) -> int:
    from georeason.data.check import check_dataset, format_report

    layout, reports = check_dataset(args.path, args.split, load_pixels=not args.quick)
    if args.json:
        print(json.dumps({"path": str(args.path), "layout": layout, "splits": [r.to_dict() for r in reports]},
                         indent=2))
    else:
        print(format_report(args.path, layout, reports))
    return 1 if any(r.problems for r in reports) else 0


# -- merge-masks (logic and options in georeason.data.merge) ---------------------------------------
def _add_merge_masks(subparsers: argparse._SubParsersAction) -> None:
    from georeason.data import merge

    parser = subparsers.add_parser("merge-masks", help=merge.CLI_HELP, description=merge.CLI_DESCRIPTION,
                                   epilog=merge.CLI_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    merge.add_arguments(parser)
    parser.set_defaults(handler=merge.run)
