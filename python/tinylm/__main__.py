"""``python -m tinylm``: see :mod:`tinylm.cli`."""

import sys

from tinylm.cli import main

sys.exit(main())
