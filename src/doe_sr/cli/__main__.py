"""`python -m doe_sr.cli`: the same entry point as the `doe-sr` script."""

import sys

from doe_sr.cli.main import main

sys.exit(main())
