"""The customer's command line in a checkout: ``python -m client`` runs the ``minipay``
command. Its code, and the client library under it, is the ``minipay.client`` package
(``minipay/client/``), which is what ``pip install`` puts in site-packages."""
