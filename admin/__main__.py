"""``python -m admin``: the admin CLI (installed as the ``minipay-admin`` command)."""

import sys

from minipay.admin.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
