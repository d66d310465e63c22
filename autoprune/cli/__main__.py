"""`python -m autoprune.cli`: the command line."""

from autoprune.cli.main import main

raise SystemExit(main())
