"""A bank's one seam to the gateway: asking the coordinator for the decisions on payments it
voted yes on. Returns plain values; a failed call is an ``Unavailable`` error."""

from __future__ import annotations

import enum
from collections.abc import Sequence

import grpc

from minipay.errors import ErrorReason
from minipay.v1 import gateway_pb2, gateway_pb2_grpc
from server.common.errors import Unavailable


class Answer(enum.Enum):
    COMMIT = "commit"
    ABORT = "abort"
    PENDING = "pending"


_ANSWERS = {
    gateway_pb2.DECISION_COMMIT: Answer.COMMIT,
    gateway_pb2.DECISION_ABORT: Answer.ABORT,
}


class CoordinatorClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel
        self._stub = gateway_pb2_grpc.CoordinatorStub(channel)

    async def decisions(self, payment_ids: Sequence[str], timeout: float) -> dict[str, Answer]:
        """The coordinator's answer per payment; anything it has not decided is PENDING."""
        try:
            answer = await self._stub.GetDecision(
                gateway_pb2.GetDecisionRequest(payment_ids=list(payment_ids)), timeout=timeout
            )
        except grpc.aio.AioRpcError as error:
            raise Unavailable(
                f"cannot reach the coordinator ({error.code().name})",
                ErrorReason.COORDINATOR_UNAVAILABLE,
            ) from None
        answers = dict.fromkeys(payment_ids, Answer.PENDING)
        for decision in answer.decisions:
            if decision.payment_id in answers:
                answers[decision.payment_id] = _ANSWERS.get(decision.decision, Answer.PENDING)
        return answers

    async def close(self) -> None:
        await self._channel.close()
