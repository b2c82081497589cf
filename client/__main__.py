"""``python -m client``: the customer CLI (installed as the ``minipay`` command)."""

from minipay.launch import customer

if __name__ == "__main__":
    customer()
