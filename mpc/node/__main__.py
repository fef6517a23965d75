"""``python -m mpc.node --state-dir DIR (--party I | --dealer)``: one process of an MPC cluster."""

import sys

from mpc.node import main

sys.exit(main())
