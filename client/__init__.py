"""The minipay client: a command line (``python -m client``) and the library under it."""
