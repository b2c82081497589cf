"""``python -m admin``: the admin CLI (installed as the ``minipay-admin`` command)."""

from minipay.launch import admin

if __name__ == "__main__":
    admin()
