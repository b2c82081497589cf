"""The console's one seam to the gateway: a single mutual-TLS channel for the whole process
(the console's own certificate), and per request a client that carries the signed-in user's
token over it.

``GatewayClient`` keeps its token on the instance; a shallow copy shares the channel and
the stubs and carries its own token, so one user's token never rides on another's call.

``Calls`` adds what the client library does not call (yet): the overview, reconcile, the
audit chain's head and the event stream. They go through the library's own ``_call`` (the
same retries, request ids and errors); their answers are the API's messages as they are.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator, Sequence

import grpc

from minipay.client import ApiError, ClientConfig, GatewayClient
from minipay.client.errors import REQUEST_ID_HEADER
from minipay.v1 import admin_pb2, events_pb2, events_pb2_grpc


class Gateway:
    def __init__(self, config: ClientConfig) -> None:
        # Opens the channel: must run inside the event loop that will use it.
        self._client = GatewayClient(config)
        self.events = events_pb2_grpc.EventsStub(self._client._channel)

    def client(self, token: str = "") -> GatewayClient:
        """A client on the shared channel calling with TOKEN ("" before login)."""
        user = copy.copy(self._client)
        user.token = token
        return user

    def calls(self, token: str) -> Calls:
        return Calls(self.client(token), self.events)

    async def close(self) -> None:
        await self._client.close()


def unimplemented(error: ApiError) -> bool:
    """The gateway does not serve this method (yet): a page shows "not available"."""
    return bool(error.code == grpc.StatusCode.UNIMPLEMENTED)


class Calls:
    """The admin calls and the event stream the client library has no method for."""

    def __init__(self, client: GatewayClient, events: events_pb2_grpc.EventsStub) -> None:
        self.client = client
        self._events = events

    async def overview(self) -> admin_pb2.GetOverviewResponse:
        message, _ = await self.client._call(
            self.client.admin.GetOverview, admin_pb2.GetOverviewRequest()
        )
        answer: admin_pb2.GetOverviewResponse = message
        return answer

    async def last_reconcile(self) -> admin_pb2.ReconcileReport | None:
        message, _ = await self.client._call(
            self.client.admin.GetLastReconcile, admin_pb2.GetLastReconcileRequest()
        )
        return message.report if message.HasField("report") else None

    async def reconcile(self) -> admin_pb2.ReconcileReport:
        message, _ = await self.client._call(
            self.client.admin.Reconcile, admin_pb2.ReconcileRequest()
        )
        report: admin_pb2.ReconcileReport = message.report
        return report

    async def audit_head(self) -> admin_pb2.ListAuditResponse:
        """The audit chain's head (one record read: the answer names the head)."""
        request = admin_pb2.ListAuditRequest(page_size=1)
        message, _ = await self.client._call(self.client.admin.ListAudit, request)
        answer: admin_pb2.ListAuditResponse = message
        return answer

    async def list_events(
        self, after_sequence: int = 0, page_size: int = 100
    ) -> events_pb2.EventsListResponse:
        request = events_pb2.EventsListRequest(after_sequence=after_sequence, page_size=page_size)
        message, _ = await self.client._call(self._events.List, request)
        answer: events_pb2.EventsListResponse = message
        return answer

    async def watch(
        self, after_sequence: int, types: Sequence[events_pb2.EventType] = ()
    ) -> AsyncIterator[events_pb2.EventsWatchResponse]:
        """Events/Watch from AFTER_SEQUENCE for as long as the caller reads (no deadline:
        the stream lasts as long as the page that shows it). Raises ApiError."""
        request_id = uuid.uuid4().hex
        metadata = [(REQUEST_ID_HEADER, request_id)]
        if self.client.token:
            metadata.append(("authorization", f"Bearer {self.client.token}"))
        request = events_pb2.EventsWatchRequest(after_sequence=after_sequence, types=types)
        call = self._events.Watch(request, metadata=metadata)
        try:
            async for answer in call:
                yield answer
        except grpc.aio.AioRpcError as error:
            raise ApiError.from_rpc_error(error, request_id) from error
        finally:
            call.cancel()
