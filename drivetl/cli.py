"""The `drivetl` command. Thin: parses arguments, then calls the package's functions.

Each subcommand lives in its own module of `drivetl.commands` exposing ``add_arguments(parser)``
and ``run(args) -> int``.
The list below is the closed set of subcommands; a module is imported when the parser is built,
so command modules keep heavy imports (torch extensions, open3d, Waymo protobufs) inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from drivetl import __version__
from drivetl._io import check_writable
from drivetl.errors import DrivetlError, one_line

# (name, module, one-line help)
_COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("simulate", "drivetl.commands.simulate", "simulate a rig in generated streets (Waymo or team format)"),
    ("convert", "drivetl.commands.convert", "Waymo v1 TFRecords -> training cache (parallel, resumable)"),
    ("info", "drivetl.commands.info", "print what a Waymo v1 TFRecord holds; --check verifies every CRC"),
    ("import", "drivetl.commands.import_", "import KITTI or TRI DGP data into the team format"),
    ("check", "drivetl.commands.check", "check a data folder: overlays, histograms, warnings with fixes"),
    ("rig", "drivetl.commands.rig", "validate and summarize rig files, estimate beam patterns"),
    ("pretrain", "drivetl.commands.pretrain", "pretrain LiDAR/camera encoders from a YAML config"),
    ("finetune", "drivetl.commands.finetune", "fine-tune a pretrained checkpoint on fleet data (adapters)"),
    ("evaluate", "drivetl.commands.evaluate", "evaluate checkpoints side by side on fleet data (AP/APH)"),
    ("predict", "drivetl.commands.predict", "run a detector on new frames: detection JSON per frame"),
    ("export", "drivetl.commands.export", "export a detector to ONNX (LoRA merged, checked)"),
    ("demo", "drivetl.commands.demo", "the whole chain on simulated data, sized for a laptop CPU"),
    ("build-ops", "drivetl.commands.build_ops", "compile the CPU/CUDA voxelization kernels ahead of time"),
)


def build_parser() -> argparse.ArgumentParser:
    """The `drivetl` parser with one subparser per command module of `_COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="drivetl",
        description=(
            "Pretrain LiDAR and camera encoders on Waymo-format data, fine-tune adapters on your own "
            "rig, and evaluate on your own fleet data."
        ),
    )
    parser.add_argument("--version", action="version", version=f"drivetl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name, help_text in _COMMANDS:
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=help_text, description=getattr(module, "DESCRIPTION", help_text))
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; exit code 2 with one line on stderr for a `DrivetlError`, 130 on Ctrl-C."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0
    try:
        out = _output_of(args)
        if out is not None:
            check_writable(out)
        return int(args._run(args) or 0)
    except DrivetlError as exc:
        print(f"drivetl {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a disk full or a path that went away mid-run: one line, not a traceback
        where = exc.filename or "?"
        print(f"drivetl {args.command}: error: {where}: {exc.strerror or exc}; check the path, its "
              "permissions and the free space", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"drivetl {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if "Original Traceback" not in str(exc):
            raise
        # not bad input but a bug, raised in a DataLoader worker: its message is the worker's whole
        # traceback; one line, and how to get the traceback in this process
        print(f"drivetl {args.command}: internal error in a data-loading worker: {one_line(exc)}; "
              "rerun with --workers 0 (or num_workers 0) for the full traceback and report it",
              file=sys.stderr)
        return 1


def _output_of(args: argparse.Namespace) -> str | None:
    """The output path a command names (``--out``/``OUT``, or convert's last path), if any."""
    if getattr(args, "command", None) == "convert" and getattr(args, "paths", None):
        return args.paths[-1]
    out = getattr(args, "out", None)
    return None if out is None else str(out)


if __name__ == "__main__":
    raise SystemExit(main())
