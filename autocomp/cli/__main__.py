"""``python -m autocomp.cli``: the same as the ``autocomp`` command."""

import sys

from autocomp.cli.main import main

sys.exit(main())
