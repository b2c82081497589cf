"""The admin's command line (``minipay-admin``, or ``python -m admin`` in a checkout), over the
gateway's Admin service through ``minipay.client``."""
