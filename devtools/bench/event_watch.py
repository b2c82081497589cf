"""How late a watcher sees events under load: an admin watches the event stream on the last
gateway replica while the load pays through every replica (so, with several replicas, most
events were decided on another one); each event's delay is from its ``occurred_at`` (the
decision, in the deciding replica's clock: every process runs on this machine) to its
arrival here."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time

from minipay.client.api import ClientConfig, GatewayClient


@dataclasses.dataclass
class EventDelays:
    replica: str
    delays: list[float] = dataclasses.field(default_factory=list)  # seconds

    def summary(self) -> str:
        if not self.delays:
            return f"events: none seen on {self.replica}"
        ordered = sorted(self.delays)
        p50 = ordered[len(ordered) // 2]
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return (
            f"events seen on {self.replica}: {len(ordered)}, delay after the decision "
            f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms"
        )


async def watch(
    config: ClientConfig, admin: tuple[str, str], delays: EventDelays, ready: asyncio.Event
) -> None:
    """Watches live payment events on the last replica of CONFIG's, as ADMIN (username and
    password), until cancelled; READY is set once it is live."""
    config = dataclasses.replace(config, gateway=config.gateway.split(",")[-1])
    async with GatewayClient(config) as client:
        await client.login(*admin)
        head = (await client.events(0, 1)).next_after_sequence
        while True:  # to the end of the stream as it is now, then live
            page = await client.events(head, 500)
            if not page.events:
                break
            head = page.next_after_sequence
        ready.set()
        with contextlib.suppress(asyncio.CancelledError):
            async for page in client.watch_events(head, ("payment.committed", "payment.aborted")):
                arrived = time.time()
                delays.delays += [arrived - e.occurred_at.timestamp() for e in page.events]
