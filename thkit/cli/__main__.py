"""``python -m thkit.cli`` (what ``torchrun ... -m thkit.cli train`` runs)."""
import sys

from thkit.cli import main

sys.exit(main())
