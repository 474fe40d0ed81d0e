"""``python -m unseen`` is the ``unseen`` console script."""

import sys

from unseen.cli import main

sys.exit(main())
