"""``python -m arml`` runs the command-line interface."""

from arml.cli import main

raise SystemExit(main())
