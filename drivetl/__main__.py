"""`python -m drivetl` is the same as the `drivetl` command."""

from drivetl.cli import main

raise SystemExit(main())
