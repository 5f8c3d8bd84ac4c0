"""``python -m reproductions.utkface_xception``."""

import sys

from reproductions.utkface_xception import main

if __name__ == "__main__":
    sys.exit(main())
