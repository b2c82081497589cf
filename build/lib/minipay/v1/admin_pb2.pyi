from minipay.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListBanksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BankInfo(_message.Message):
    __slots__ = ("name", "address", "serving")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    serving: bool
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., serving: _Optional[bool] = ...) -> None: ...

class ListBanksResponse(_message.Message):
    __slots__ = ("banks",)
    BANKS_FIELD_NUMBER: _ClassVar[int]
    banks: _containers.RepeatedCompositeFieldContainer[BankInfo]
    def __init__(self, banks: _Optional[_Iterable[_Union[BankInfo, _Mapping]]] = ...) -> None: ...

class User(_message.Message):
    __slots__ = ("username", "name", "role", "disabled", "account", "balance")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    username: str
    name: str
    role: str
    disabled: bool
    account: _common_pb2.AccountRef
    balance: _common_pb2.Money
    def __init__(self, username: _Optional[str] = ..., name: _Optional[str] = ..., role: _Optional[str] = ..., disabled: _Optional[bool] = ..., account: _Optional[_Union[_common_pb2.AccountRef, _Mapping]] = ..., balance: _Optional[_Union[_common_pb2.Money, _Mapping]] = ...) -> None: ...

class CreateUserRequest(_message.Message):
    __slots__ = ("username", "name", "password", "account", "initial_balance", "role")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    INITIAL_BALANCE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    username: str
    name: str
    password: str
    account: _common_pb2.AccountRef
    initial_balance: _common_pb2.Money
    role: str
    def __init__(self, username: _Optional[str] = ..., name: _Optional[str] = ..., password: _Optional[str] = ..., account: _Optional[_Union[_common_pb2.AccountRef, _Mapping]] = ..., initial_balance: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., role: _Optional[str] = ...) -> None: ...

class CreateUserResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: User
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ...) -> None: ...

class ListUsersRequest(_message.Message):
    __slots__ = ("bank",)
    BANK_FIELD_NUMBER: _ClassVar[int]
    bank: str
    def __init__(self, bank: _Optional[str] = ...) -> None: ...

class ListUsersResponse(_message.Message):
    __slots__ = ("users",)
    USERS_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[User]
    def __init__(self, users: _Optional[_Iterable[_Union[User, _Mapping]]] = ...) -> None: ...

class SetUserDisabledRequest(_message.Message):
    __slots__ = ("bank", "username", "disabled")
    BANK_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    bank: str
    username: str
    disabled: bool
    def __init__(self, bank: _Optional[str] = ..., username: _Optional[str] = ..., disabled: _Optional[bool] = ...) -> None: ...

class SetUserDisabledResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: User
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ...) -> None: ...

class DepositRequest(_message.Message):
    __slots__ = ("account", "amount", "idempotency_key")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    account: _common_pb2.AccountRef
    amount: _common_pb2.Money
    idempotency_key: str
    def __init__(self, account: _Optional[_Union[_common_pb2.AccountRef, _Mapping]] = ..., amount: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class DepositResponse(_message.Message):
    __slots__ = ("balance",)
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    balance: _common_pb2.Money
    def __init__(self, balance: _Optional[_Union[_common_pb2.Money, _Mapping]] = ...) -> None: ...
