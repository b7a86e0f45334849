"""`python -m vlfactory.cli ...` runs the command line, as the `vlfactory` script does."""

from vlfactory.cli import main

main()
