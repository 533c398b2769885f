"""``python -m fnnjax`` is the ``fnnjax`` command."""

import sys

from fnnjax.cli import main

sys.exit(main())
