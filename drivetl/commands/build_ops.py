"""`drivetl build-ops`: compile the voxelization kernels ahead of time (e.g. before a multi-GPU launch)."""

from __future__ import annotations

import argparse

DESCRIPTION = (
    "Compile drivetl's CPU and/or CUDA kernels now (they are otherwise built on first use) and print "
    "where they are. The build folder is $DRIVETL_OPS_BUILD_DIR, default ~/.cache/drivetl/ops."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `drivetl build-ops`."""
    parser.add_argument(
        "--backend",
        choices=("cpu", "cuda", "all"),
        default="all",
        help="which kernels to build; 'all' builds CPU and, when torch has CUDA, CUDA (default: all)",
    )


def run(args: argparse.Namespace) -> int:
    """Run `drivetl build-ops`; returns the exit code."""
    import torch

    from drivetl.ops import build

    kinds = ["cpu", "cuda"] if args.backend == "all" else [args.backend]
    for kind in kinds:
        if args.backend == "all" and kind == "cuda" and torch.version.cuda is None:
            print(f"cuda: skipped (torch {torch.__version__} has no CUDA)")
            continue
        folder = build(kind)  # raises BackendUnavailableError with the compiler output
        print(f"{kind}: built and loaded, in {folder}")
    return 0
