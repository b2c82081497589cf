"""A bank's one seam to the gateway: asking the coordinator for the decisions on payments it
voted yes on. Returns plain values (each payment's ``Status``); a failed call is an
``Unavailable`` error."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from minipay.errors import ErrorReason
from minipay.v1 import gateway_pb2, gateway_pb2_grpc
from server.common.errors import Unavailable
from server.common.vocabulary import Status

_STATUSES = {
    gateway_pb2.DECISION_COMMIT: Status.COMMITTED,
    gateway_pb2.DECISION_ABORT: Status.ABORTED,
}


class CoordinatorClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel
        self._stub = gateway_pb2_grpc.CoordinatorStub(channel)

    async def statuses(self, payment_ids: Sequence[str], timeout: float) -> dict[str, Status]:
        """Each payment's status as the coordinator answers; anything it has not decided is
        PENDING."""
        try:
            answer = await self._stub.GetDecision(
                gateway_pb2.GetDecisionRequest(payment_ids=list(payment_ids)), timeout=timeout
            )
        except grpc.aio.AioRpcError as error:
            raise Unavailable(
                f"cannot reach the coordinator ({error.code().name})",
                ErrorReason.COORDINATOR_UNAVAILABLE,
            ) from None
        statuses = dict.fromkeys(payment_ids, Status.PENDING)
        for decision in answer.decisions:
            if decision.payment_id in statuses:
                statuses[decision.payment_id] = _STATUSES.get(decision.decision, Status.PENDING)
        return statuses

    async def close(self) -> None:
        await self._channel.close()
