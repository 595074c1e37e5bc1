"""The frozen binary's entry point: the same as the console script."""

import sys

from iris_credexec.entry import run

sys.exit(run())
