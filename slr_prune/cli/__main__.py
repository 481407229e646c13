"""`python -m slr_prune.cli` (e.g. under torchrun)."""

import sys

from . import main

sys.exit(main())
