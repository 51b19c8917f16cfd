"""`python -m slimctr`, which is how torchrun starts it: ``torchrun ... -m slimctr train ...``."""

import sys

from slimctr.cli import main

sys.exit(main())
