"""`georeason convert`: import the authors' released SegEarth-R1 checkpoint into a georeason folder.

Maps the transformers-4.36 Phi layout and the detectron2 names (docs/model.md), checks every tensor
before reading any, and streams them into config.json + model.safetensors (sharded with
model.safetensors.index.json above 1 GiB), the released tokenizer files and a model card README.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

CLI_DESCRIPTION = __doc__
CLI_EPILOG = """examples:
  georeason convert ~/downloads/SegEarth-R1-EarthReason models/segearth-r1-earthreason
  (hub ids need no conversion step: georeason predict --model earth-insights/SegEarth-R1-EarthReason ...)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("released", type=Path, help="released checkpoint folder (config.json + weights)")
    parser.add_argument("out", type=Path, help="output georeason model folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty output folder, replacing its model files (other files are kept)")


def run(args: argparse.Namespace) -> int:
    from georeason.errors import GeoreasonError
    from georeason.filenames import printable
    from georeason.model.convert import convert_released_folder
    from georeason.model.output_folder import check_model_out, kept_note, write_model_folder

    replaceable = check_model_out(args.out, args.overwrite)  # before any work; nothing is deleted here
    if not args.released.is_dir():
        raise GeoreasonError(f"{printable(args.released)}: no such released checkpoint folder")
    details: dict[str, object] = {}

    def save(folder: Path) -> None:
        # convert_released_folder creates its target folder whole; it goes inside the staging folder and
        # its files are lifted up, so write_model_folder commits them file by file (others' files kept).
        inner = folder / "converted"
        details["parameters"], details["note"] = convert_released_folder(args.released, inner,
                                                                         label=printable(args.released))
        for entry in list(inner.iterdir()):
            entry.rename(folder / entry.name)
        inner.rmdir()

    try:
        kept = write_model_folder(args.out, replaceable, save)
    except OSError as error:
        raise GeoreasonError(f"{printable(args.out)}: cannot write the converted model "
                             f"({error.strerror or error}); nothing was kept") from None
    print(f"wrote {printable(args.out)}: {details['parameters']:,} parameters ({details['note']})")
    kept_line = kept_note(args.out, kept)
    if kept_line:
        print(kept_line)
    return 0
