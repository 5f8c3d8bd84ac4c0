"""``python -m reproductions.utkface_dual_cnn``."""

import sys

from reproductions.utkface_dual_cnn import main

if __name__ == "__main__":
    sys.exit(main())
