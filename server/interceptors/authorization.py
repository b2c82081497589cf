"""Who may call what: the one permission table for every method on every server.

A method missing from this table is refused (deny by default). Customers act only on their
own account because the gateway takes the account from their token, never from the request.
"""

from __future__ import annotations

from server.common.principal import Caller

ANY_CERT = frozenset({Caller.ANY_CERT})
CUSTOMER = frozenset({Caller.CUSTOMER})
ADMIN = frozenset({Caller.ADMIN})
GATEWAY = frozenset({Caller.GATEWAY})
BANK = frozenset({Caller.BANK})

PERMISSIONS: dict[str, frozenset[Caller]] = {
    # Standard services: open to any peer that passed the mutual TLS handshake.
    "/grpc.health.v1.Health/Check": ANY_CERT,
    "/grpc.health.v1.Health/Watch": ANY_CERT,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": ANY_CERT,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": ANY_CERT,
    # Gateway, identity.
    "/minipay.v1.Auth/Register": ANY_CERT,
    "/minipay.v1.Auth/Login": ANY_CERT,
    "/minipay.v1.Auth/Logout": CUSTOMER | ADMIN,
    # Gateway, money: always the caller's own account.
    "/minipay.v1.Payments/GetBalance": CUSTOMER,
    "/minipay.v1.Payments/Pay": CUSTOMER,
    "/minipay.v1.Payments/GetPayment": CUSTOMER,
    "/minipay.v1.Payments/ListHistory": CUSTOMER,
    "/minipay.v1.Payments/Refund": CUSTOMER,
    "/minipay.v1.Payments/GetPaymentTrace": CUSTOMER,
    "/minipay.v1.Payments/PayBatch": CUSTOMER,
    # Gateway, the event stream: a customer's own account's events; an admin's, every event.
    "/minipay.v1.Events/List": CUSTOMER | ADMIN,
    "/minipay.v1.Events/Watch": CUSTOMER | ADMIN,
    # Gateway, administration.
    "/minipay.v1.Admin/ListBanks": ADMIN,
    "/minipay.v1.Admin/CreateUser": ADMIN,
    "/minipay.v1.Admin/ListUsers": ADMIN,
    "/minipay.v1.Admin/SetUserDisabled": ADMIN,
    "/minipay.v1.Admin/Deposit": ADMIN,
    "/minipay.v1.Admin/Refund": ADMIN,
    "/minipay.v1.Admin/GetPayment": ADMIN,
    "/minipay.v1.Admin/GetPaymentTrace": ADMIN,
    "/minipay.v1.Admin/ListPayments": ADMIN,
    "/minipay.v1.Admin/ListAudit": ADMIN,
    "/minipay.v1.Admin/Reconcile": ADMIN,
    "/minipay.v1.Admin/GetLastReconcile": ADMIN,
    "/minipay.v1.Admin/GetOverview": ADMIN,
    # Gateway, asked by a bank that voted yes and heard no decision.
    "/minipay.v1.Coordinator/GetDecision": BANK,
    # Banks: only the gateway.
    "/minipay.v1.Participant/Prepare": GATEWAY,
    "/minipay.v1.Participant/Commit": GATEWAY,
    "/minipay.v1.Participant/Abort": GATEWAY,
    "/minipay.v1.Accounts/VerifyCredentials": GATEWAY,
    "/minipay.v1.Accounts/GetAccount": GATEWAY,
    "/minipay.v1.Accounts/CreateCustomer": GATEWAY,
    "/minipay.v1.Accounts/ListCustomers": GATEWAY,
    "/minipay.v1.Accounts/SetCustomerDisabled": GATEWAY,
    "/minipay.v1.Accounts/ApplyDeposit": GATEWAY,
    # Banks, their books for the gateway's reconcile (read only): only the gateway.
    "/minipay.v1.Ledger/ListBankPayments": GATEWAY,
    "/minipay.v1.Ledger/ListDeposits": GATEWAY,
    "/minipay.v1.Ledger/GetBooks": GATEWAY,
}


def allowed_callers(method: str) -> frozenset[Caller]:
    return PERMISSIONS.get(method, frozenset())
