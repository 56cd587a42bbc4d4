"""``python -m interpret_segmentation.cli``: the ``interpret-segmentation`` command."""

import sys

from . import main

sys.exit(main())
