"""The admin's command line in a checkout: ``python -m admin`` runs the ``minipay-admin``
command, whose code is the ``minipay.admin`` package (``minipay/admin/``)."""
