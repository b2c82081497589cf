"""``python -m client``: the customer CLI (installed as the ``minipay`` command)."""

import sys

from minipay.client.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
