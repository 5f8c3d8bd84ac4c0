"""``python -m reproductions.mtl_weighted_loss``."""

import sys

from reproductions.mtl_weighted_loss import main

if __name__ == "__main__":
    sys.exit(main())
