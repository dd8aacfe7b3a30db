import sys

from nst_fast.serve.cli import main

sys.exit(main())
