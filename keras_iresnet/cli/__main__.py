"""``python -m keras_iresnet.cli``: the ``iresnet`` command."""

import sys

from keras_iresnet.cli import main

sys.exit(main())
