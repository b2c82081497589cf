"""The minipay admin command line (``python -m admin``), over the gateway's admin service."""
