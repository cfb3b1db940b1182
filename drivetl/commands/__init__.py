"""The `drivetl` subcommands, one module each (listed in `drivetl.cli`).

Each module exposes ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args) -> int`` and imports
heavy dependencies inside ``run`` only.
"""
