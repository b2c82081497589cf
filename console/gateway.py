"""The console's one seam to the gateway: a single mutual-TLS channel for the whole process
(the console's own certificate), and per request a client that carries the signed-in user's
token over it.

``GatewayClient`` keeps its token on the instance; a shallow copy shares the channel and
the stubs and carries its own token, so one user's token never rides on another's call.
"""

from __future__ import annotations

import copy

from minipay.client import ClientConfig, GatewayClient


class Gateway:
    def __init__(self, config: ClientConfig) -> None:
        # Opens the channel: must run inside the event loop that will use it.
        self._client = GatewayClient(config)

    def client(self, token: str = "") -> GatewayClient:
        """A client on the shared channel calling with TOKEN ("" before login)."""
        user = copy.copy(self._client)
        user.token = token
        return user

    async def close(self) -> None:
        await self._client.close()
