"""``python -m reproductions.adience_levi``."""

import sys

from reproductions.adience_levi import main

if __name__ == "__main__":
    sys.exit(main())
