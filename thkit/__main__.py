"""``python -m thkit``: the command line."""
import sys

from thkit.cli import main

sys.exit(main())
