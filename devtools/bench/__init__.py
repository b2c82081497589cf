"""``python -m devtools.bench`` (``make bench``): a load test of cross-bank payments against a
real cluster, with its figures given as ratios to an echo baseline measured in the same run.

First, for each concurrency the run uses, the echo baseline: unary grpc.aio echoes over the
same mutual TLS, server and client in two processes, for a few seconds. Then each
configuration (``sqlite:1``, ``postgres:2``: the database backend and how many gateway
replicas share it) starts a fresh cluster (three banks and the gateway replicas, mutual TLS
with the certificates in ``certificate/dev``) in a temporary folder, with fresh PostgreSQL
databases where it runs on PostgreSQL (dropped afterwards). With ``--preload N`` the cluster
is stopped once started, N finished payments are written straight into its databases, and it
starts again. Every seed customer is registered and logged in, topped up through the admin
``Deposit`` call so that payments do not run out of money, and ``--concurrency`` client
coroutines issue ``--payments`` payments in total, each between two different banks, their
calls spread over every replica. It reports throughput (and its ratio to the echo), latency
percentiles, outcomes, the CPU each process used per payment, after a preload the latency of
a history page and of an idempotent replay, and whether money was conserved: read straight
from the banks' databases once the cluster is idle, the total must be the same before and
after, no hold left, every balance moved by exactly the payments reported committed and
equal to the sum of its ledger. ``--sweep`` runs 1 to 64 clients and draws a PNG;
``--repeat`` gives every figure as median [min-max]; ``--failover`` kills a replica under load
and prints what the clients saw, second by second.

The load generator runs in this process on asyncio, one channel per ``--per-channel``
workers; every customer's session shares the channel (the tokens are bound to the shared
``client-1`` certificate), so a call costs one ``GatewayClient.pay`` and nothing else.

Modules, one job each: ``config`` (configurations, what a run is and what it measured),
``echo`` (the baseline), ``backends`` (the databases of a run and their durability), ``load``
(topping the customers up, and the concurrent clients), ``preload`` (bulk-writing finished
payments), ``probes`` (history and replay latency), ``processes`` (CPU and log size per
process), ``run`` (one configuration from start to stop), ``failover`` (the kill under load),
``summary`` (median and range over repeats), ``plot`` (the sweep's PNG), ``report`` (text,
JSON and the targets), ``progress`` (the lines on standard error as a run goes),
``__main__`` (the command line). Shared with the tests, one level up: ``devtools.books`` (the
databases' books and the conservation checks), ``devtools.customers`` (the seed's customers
and logging them in), ``devtools.scratch`` (free ports, fresh PostgreSQL databases).
"""
