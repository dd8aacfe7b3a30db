"""``python -m nst_fast.stylize``: the same as ``nst-stylize``."""

import sys

from nst_fast.stylize.cli import main

sys.exit(main())
