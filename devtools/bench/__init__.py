"""``python -m devtools.bench``: a load test of cross-bank payments against a real cluster.

Each configuration starts a fresh cluster (three banks and the gateway, SQLite with durable
synchronous commits, mutual TLS with the certificates in ``certificate/dev``) in a temporary
folder, registers and logs in every seed customer, tops their balances up through the admin
``Deposit`` call so that payments do not run out of money, and then drives ``--concurrency``
client coroutines that issue ``--payments`` payments in total, each between two different
banks. It reports throughput, latency percentiles, outcomes, the CPU each process used, and
whether money was conserved: the sum of every balance, read straight from the banks'
databases once the cluster is idle, must be the same before and after, with no hold left and
every balance moved by exactly the payments reported committed.

The load generator runs in this process on asyncio, one channel per ``--per-channel``
workers; every customer's session shares the channel (the tokens are bound to the shared
``client-1`` certificate), so a call costs one ``GatewayClient.pay`` and nothing else.

Modules, one job each: ``config`` (what a run is and what it measured), ``load`` (the
customers and the concurrent clients), ``books`` (the banks' databases and the conservation
checks), ``processes`` (CPU and log size per process), ``run`` (one configuration from start
to stop), ``report`` (text, JSON and the targets), ``__main__`` (the command line).
"""
