"""The minipay client library and the customer's command line (``minipay``, or
``python -m client`` in a checkout).

What a program imports::

    from minipay.client import ApiError, ClientConfig, GatewayClient, MinipayError

``GatewayClient`` is the typed async API (``minipay.client.api``); the dataclasses it returns
are in ``minipay.client.results`` and the errors it raises in ``minipay.client.errors``: all of
them are ``MinipayError`` (``ApiError`` from the gateway, ``ClientError`` from this side).
"""

from minipay.client.api import (
    AccountRef,
    ApiError,
    Balance,
    Bank,
    BankList,
    BatchItem,
    BatchResult,
    BatchResults,
    ClientConfig,
    ClientError,
    Deposit,
    Direction,
    GatewayClient,
    GatewayUnreachable,
    HistoryPage,
    ItemError,
    LoginResult,
    LogoutResult,
    MinipayError,
    Overview,
    Payment,
    PaymentKind,
    PaymentStatus,
    ReconcileReport,
    Registration,
    RetryPolicy,
    Share,
    SplitShare,
    User,
    UserList,
)

__all__ = [
    "AccountRef",
    "ApiError",
    "Balance",
    "Bank",
    "BankList",
    "BatchItem",
    "BatchResult",
    "BatchResults",
    "ClientConfig",
    "ClientError",
    "Deposit",
    "Direction",
    "GatewayClient",
    "GatewayUnreachable",
    "HistoryPage",
    "ItemError",
    "LoginResult",
    "LogoutResult",
    "MinipayError",
    "Overview",
    "Payment",
    "PaymentKind",
    "PaymentStatus",
    "ReconcileReport",
    "Registration",
    "RetryPolicy",
    "Share",
    "SplitShare",
    "User",
    "UserList",
]
