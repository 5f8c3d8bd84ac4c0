"""``python -m reproductions.efficientnet_age_groups``."""

import sys

from reproductions.efficientnet_age_groups import main

if __name__ == "__main__":
    sys.exit(main())
