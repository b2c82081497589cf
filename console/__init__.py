"""The minipay web console."""
