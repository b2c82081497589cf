from minipay.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LegSide(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEG_SIDE_UNSPECIFIED: _ClassVar[LegSide]
    LEG_SIDE_DEBIT: _ClassVar[LegSide]
    LEG_SIDE_CREDIT: _ClassVar[LegSide]

class VoteValue(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VOTE_VALUE_UNSPECIFIED: _ClassVar[VoteValue]
    VOTE_VALUE_YES: _ClassVar[VoteValue]
    VOTE_VALUE_NO: _ClassVar[VoteValue]
LEG_SIDE_UNSPECIFIED: LegSide
LEG_SIDE_DEBIT: LegSide
LEG_SIDE_CREDIT: LegSide
VOTE_VALUE_UNSPECIFIED: VoteValue
VOTE_VALUE_YES: VoteValue
VOTE_VALUE_NO: VoteValue

class Leg(_message.Message):
    __slots__ = ("payment_id", "side", "account", "amount")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    side: LegSide
    account: str
    amount: _common_pb2.Money
    def __init__(self, payment_id: _Optional[str] = ..., side: _Optional[_Union[LegSide, str]] = ..., account: _Optional[str] = ..., amount: _Optional[_Union[_common_pb2.Money, _Mapping]] = ...) -> None: ...

class PrepareRequest(_message.Message):
    __slots__ = ("legs", "commit", "abort")
    LEGS_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    ABORT_FIELD_NUMBER: _ClassVar[int]
    legs: _containers.RepeatedCompositeFieldContainer[Leg]
    commit: _containers.RepeatedScalarFieldContainer[str]
    abort: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, legs: _Optional[_Iterable[_Union[Leg, _Mapping]]] = ..., commit: _Optional[_Iterable[str]] = ..., abort: _Optional[_Iterable[str]] = ...) -> None: ...

class Vote(_message.Message):
    __slots__ = ("payment_id", "side", "value", "reason_code", "reason")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    side: LegSide
    value: VoteValue
    reason_code: str
    reason: str
    def __init__(self, payment_id: _Optional[str] = ..., side: _Optional[_Union[LegSide, str]] = ..., value: _Optional[_Union[VoteValue, str]] = ..., reason_code: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PrepareResponse(_message.Message):
    __slots__ = ("votes", "acknowledged")
    VOTES_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    votes: _containers.RepeatedCompositeFieldContainer[Vote]
    acknowledged: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, votes: _Optional[_Iterable[_Union[Vote, _Mapping]]] = ..., acknowledged: _Optional[_Iterable[str]] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("payment_ids",)
    PAYMENT_IDS_FIELD_NUMBER: _ClassVar[int]
    payment_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, payment_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("acknowledged",)
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    acknowledged: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, acknowledged: _Optional[_Iterable[str]] = ...) -> None: ...

class AbortRequest(_message.Message):
    __slots__ = ("payment_ids",)
    PAYMENT_IDS_FIELD_NUMBER: _ClassVar[int]
    payment_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, payment_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class AbortResponse(_message.Message):
    __slots__ = ("acknowledged",)
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    acknowledged: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, acknowledged: _Optional[_Iterable[str]] = ...) -> None: ...

class VerifyCredentialsRequest(_message.Message):
    __slots__ = ("username", "password", "account")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    username: str
    password: str
    account: str
    def __init__(self, username: _Optional[str] = ..., password: _Optional[str] = ..., account: _Optional[str] = ...) -> None: ...

class VerifyCredentialsResponse(_message.Message):
    __slots__ = ("ok", "role", "account", "disabled")
    OK_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    role: str
    account: str
    disabled: bool
    def __init__(self, ok: _Optional[bool] = ..., role: _Optional[str] = ..., account: _Optional[str] = ..., disabled: _Optional[bool] = ...) -> None: ...

class GetAccountRequest(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: str
    def __init__(self, account: _Optional[str] = ...) -> None: ...

class GetAccountResponse(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: AccountInfo
    def __init__(self, account: _Optional[_Union[AccountInfo, _Mapping]] = ...) -> None: ...

class AccountInfo(_message.Message):
    __slots__ = ("account", "balance", "available", "disabled", "held")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    account: str
    balance: _common_pb2.Money
    available: _common_pb2.Money
    disabled: bool
    held: _common_pb2.Money
    def __init__(self, account: _Optional[str] = ..., balance: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., available: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., disabled: _Optional[bool] = ..., held: _Optional[_Union[_common_pb2.Money, _Mapping]] = ...) -> None: ...

class CustomerInfo(_message.Message):
    __slots__ = ("username", "name", "role", "disabled", "account")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    username: str
    name: str
    role: str
    disabled: bool
    account: AccountInfo
    def __init__(self, username: _Optional[str] = ..., name: _Optional[str] = ..., role: _Optional[str] = ..., disabled: _Optional[bool] = ..., account: _Optional[_Union[AccountInfo, _Mapping]] = ...) -> None: ...

class CreateCustomerRequest(_message.Message):
    __slots__ = ("username", "name", "password", "role", "account", "initial_balance")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    INITIAL_BALANCE_FIELD_NUMBER: _ClassVar[int]
    username: str
    name: str
    password: str
    role: str
    account: str
    initial_balance: _common_pb2.Money
    def __init__(self, username: _Optional[str] = ..., name: _Optional[str] = ..., password: _Optional[str] = ..., role: _Optional[str] = ..., account: _Optional[str] = ..., initial_balance: _Optional[_Union[_common_pb2.Money, _Mapping]] = ...) -> None: ...

class CreateCustomerResponse(_message.Message):
    __slots__ = ("customer",)
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    customer: CustomerInfo
    def __init__(self, customer: _Optional[_Union[CustomerInfo, _Mapping]] = ...) -> None: ...

class ListCustomersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCustomersResponse(_message.Message):
    __slots__ = ("customers",)
    CUSTOMERS_FIELD_NUMBER: _ClassVar[int]
    customers: _containers.RepeatedCompositeFieldContainer[CustomerInfo]
    def __init__(self, customers: _Optional[_Iterable[_Union[CustomerInfo, _Mapping]]] = ...) -> None: ...

class SetCustomerDisabledRequest(_message.Message):
    __slots__ = ("username", "disabled")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    username: str
    disabled: bool
    def __init__(self, username: _Optional[str] = ..., disabled: _Optional[bool] = ...) -> None: ...

class SetCustomerDisabledResponse(_message.Message):
    __slots__ = ("customer",)
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    customer: CustomerInfo
    def __init__(self, customer: _Optional[_Union[CustomerInfo, _Mapping]] = ...) -> None: ...

class ApplyDepositRequest(_message.Message):
    __slots__ = ("account", "amount", "deposit_id")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    DEPOSIT_ID_FIELD_NUMBER: _ClassVar[int]
    account: str
    amount: _common_pb2.Money
    deposit_id: str
    def __init__(self, account: _Optional[str] = ..., amount: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., deposit_id: _Optional[str] = ...) -> None: ...

class ApplyDepositResponse(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: AccountInfo
    def __init__(self, account: _Optional[_Union[AccountInfo, _Mapping]] = ...) -> None: ...
