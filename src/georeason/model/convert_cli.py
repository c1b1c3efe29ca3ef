"""`georeason convert`: import the authors' released SegEarth-R1 checkpoint into a georeason folder.

Maps the transformers-4.36 Phi layout and the detectron2 names (SPEC 5), checks every tensor, and
writes config.json + model.safetensors (+ the released tokenizer files when present).
"""

from __future__ import annotations

import argparse
from pathlib import Path

CLI_DESCRIPTION = __doc__
CLI_EPILOG = """example:
  georeason convert ~/downloads/SegEarth-R1-EarthReason models/segearth-r1-earthreason
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("released", type=Path, help="released checkpoint folder (config.json + weights)")
    parser.add_argument("out", type=Path, help="output georeason model folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty output folder, replacing its model files (other files are kept)")


def run(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from georeason.model.convert import load_released
    from georeason.model.factory import byte_level_tokenizer
    from georeason.model.output_folder import check_model_out, kept_note, write_model_folder

    replaceable = check_model_out(args.out, args.overwrite)  # before any work; nothing is deleted here
    model = load_released(args.released)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(args.released))
        note = "released tokenizer"
    except (OSError, ValueError):
        tokenizer = byte_level_tokenizer()
        note = "no tokenizer in the released folder: a byte-level stand-in was written; copy the real one in"
    kept = write_model_folder(args.out, replaceable, lambda folder: model.save_pretrained(folder, tokenizer=tokenizer))
    print(f"wrote {args.out}: {model.num_parameters():,} parameters ({note})")
    kept_line = kept_note(args.out, kept)
    if kept_line:
        print(kept_line)
    return 0
