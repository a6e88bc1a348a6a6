"""``python -m sosm.cli`` runs the ``sosm`` command line."""
import sys

from . import main

sys.exit(main())
