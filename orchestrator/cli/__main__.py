"""`python -m orchestrator.cli`: the `splitseal` command."""

import sys

from . import main

sys.exit(main())
