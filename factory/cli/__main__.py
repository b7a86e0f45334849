"""`python -m vlfactory.cli ...` runs the command line, as the `vlfactory` script does."""

from vlfactory.cli import main

if __name__ == "__main__":  # importing the module (the wheel test walks every module) must not run the CLI
    main()
