"""Tools for developing minipay, not part of what runs in production or what a customer
installs: the cluster launcher (``make up``, the tests), the demo and the benchmark."""
