"""The `georeason` command: one entry point, one module per subcommand.

Each subcommand lives in the module that does the work and exposes `add_arguments(parser)` and
`run(args) -> int`; this file only dispatches, so `georeason --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from georeason import __version__
from georeason.errors import GeoreasonError
from georeason.filenames import printable

# name -> (module, one-line summary). Modules are imported only when their command runs.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "init": ("georeason.model.init_cli", "write a model folder from a preset (random or from local weights)"),
    "convert": ("georeason.model.convert_cli", "import the authors' released SegEarth-R1 checkpoint"),
    "data": ("georeason.data.cli", "check datasets and merge externally drawn masks"),
    "synth": ("georeason.data.synth_cli", "generate the synthetic geospatial reasoning benchmark"),
    "train": ("georeason.train", "train a model (the paper's recipe by default)"),
    "eval": ("georeason.evaluate", "score a model with the released evaluation protocol"),
    "predict": ("georeason.predict", "segment images or GeoTIFFs from a question"),
    "batch": ("georeason.batch.cli", "tiled inference over scene catalogues (folders, lists, STAC) on Ray"),
    "serve": ("georeason.serve.app", "start the web demo and REST service"),
    "redundancy": ("georeason.redundancy", "measure image redundancy of collections (paper Eq. 1-3)"),
    "annotate": ("georeason.annotate.pipeline", "generate EarthReason-style questions and answers"),
    "demo": ("georeason.demo", "the end-to-end demo: synth data, train smol, evaluate, predict"),
}


def _top_level_help() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = [
        f"georeason {__version__}: geospatial pixel reasoning (SegEarth-R1)",
        "",
        "usage: georeason [--version] [--debug] COMMAND [options]",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in SUBCOMMANDS.items()]
    lines += ["", "Run `georeason COMMAND --help` for the options and an example of each command.",
              "--debug prints the full traceback of an error."]
    return "\n".join(lines)


def _tolerant_streams() -> None:
    """Never fail to print: a file name that is not valid UTF-8 is shown escaped rather than raising."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and getattr(stream, "errors", None) == "strict":
            reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _tolerant_streams()
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_level_help())
        return 0
    if argv[0] == "--version":
        print(f"georeason {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"georeason: unknown command {name!r}; choose from {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    module_name, summary = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
        parser = argparse.ArgumentParser(
            prog=f"georeason {name}",
            description=getattr(module, "CLI_DESCRIPTION", summary),
            epilog=getattr(module, "CLI_EPILOG", None),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(parser)
        args = parser.parse_args(rest)
        args.debug = debug
        return int(module.run(args) or 0)
    except GeoreasonError as error:
        if debug:
            traceback.print_exc()
        print(f"georeason {name}: error: {printable(error, multiline=True)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"georeason {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the last line of defence for a CLI
        if debug:
            traceback.print_exc()
        else:
            print(f"georeason {name}: internal error: {type(error).__name__}: {printable(error, multiline=True)}\n"
                  "(run again with --debug for the full traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
