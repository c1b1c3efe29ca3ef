"""`georeason convert`: import the authors' released SegEarth-R1 checkpoint into a georeason folder.

Maps the transformers-4.36 Phi layout and the detectron2 names (SPEC 5), checks every tensor, and
writes config.json + model.safetensors (+ the released tokenizer files when present).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from georeason.errors import GeoreasonError

CLI_DESCRIPTION = __doc__
CLI_EPILOG = """example:
  georeason convert ~/downloads/SegEarth-R1-EarthReason models/segearth-r1-earthreason
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("released", type=Path, help="released checkpoint folder (config.json + weights)")
    parser.add_argument("out", type=Path, help="output georeason model folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def run(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from georeason.model.convert import load_released
    from georeason.model.factory import byte_level_tokenizer

    if args.out.exists() and not args.overwrite:
        raise GeoreasonError(f"{args.out}: exists; pass --overwrite to replace it")
    model = load_released(args.released)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(args.released))
        note = "released tokenizer"
    except (OSError, ValueError):
        tokenizer = byte_level_tokenizer()
        note = "no tokenizer in the released folder: a byte-level stand-in was written; copy the real one in"
    if args.out.exists():
        shutil.rmtree(args.out)
    model.save_pretrained(args.out, tokenizer=tokenizer)
    print(f"wrote {args.out}: {model.num_parameters():,} parameters ({note})")
    return 0
