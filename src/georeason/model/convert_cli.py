"""`georeason convert`: import the authors' released SegEarth-R1 checkpoint into a georeason folder.

Maps the transformers-4.36 Phi layout and the detectron2 names (docs/model.md), checks every tensor
before reading any, and streams them into config.json + model.safetensors (sharded with
model.safetensors.index.json above 1 GiB), the released tokenizer files and a model card README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from georeason.errors import GeoreasonError

CLI_DESCRIPTION = __doc__
CLI_EPILOG = """examples:
  georeason convert ~/downloads/SegEarth-R1-EarthReason models/segearth-r1-earthreason
  (hub ids need no conversion step: georeason predict --model earth-insights/SegEarth-R1-EarthReason ...)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("released", type=Path, help="released checkpoint folder (config.json + weights)")
    parser.add_argument("out", type=Path, help="output georeason model folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def run(args: argparse.Namespace) -> int:
    from georeason.model.convert import convert_released_folder

    out: Path = args.out
    if out.exists() and not args.overwrite:
        raise GeoreasonError(f"{out}: exists; pass --overwrite to replace it")
    if not args.released.is_dir():
        raise GeoreasonError(f"{args.released}: no such released checkpoint folder")
    # The new folder is complete before the old one goes: a failed conversion leaves the old one intact.
    target = out.with_name(f".{out.name}.new-{os.getpid()}") if out.exists() else out
    try:
        parameters, note = convert_released_folder(args.released, target)
    except OSError as error:
        raise GeoreasonError(f"{out}: cannot write the converted model ({error.strerror or error}); "
                             "nothing was kept") from None
    if target != out:
        retired = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.rename(out, retired)
        os.rename(target, out)
        shutil.rmtree(retired, ignore_errors=True)
    print(f"wrote {out}: {parameters:,} parameters ({note})")
    return 0
