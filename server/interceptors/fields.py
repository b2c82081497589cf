"""The rules no field of any request may break, checked once for every call before a
servicer sees it, and read from the message's own descriptor so that a new method or field is
covered without a line of code: text within a bound and without NUL (PostgreSQL cannot store
one), enums with a value the enum defines, times within years 1 to 9999 with nanos 0-999999999
(what ``google.protobuf.Timestamp`` promises; Python's datetime and the databases hold no
other). And, for bytes that do not parse, the field they break on.

What each field may hold besides (a username's characters, a known currency) are
``server.common.validation``'s rules, which the servicers apply.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from google.protobuf import descriptor_pool, timestamp_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from server.common.errors import InvalidArgument
from server.interceptors.handlers import Malformed

# Longer than any field's own rule allows (the longest, an idempotency key, is 255).
MAX_TEXT_LENGTH = 1024
# 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, in seconds since the epoch.
MIN_SECONDS, MAX_SECONDS = -62_135_596_800, 253_402_300_799
MAX_NANOS = 999_999_999
_TIMESTAMP = "google.protobuf.Timestamp"


@dataclass(frozen=True)
class _Rule:
    """What to check in one field of a message type."""

    name: str
    kind: str  # text, enum, time, message, or map (keys and values checked by their types)
    repeated: bool
    defined: frozenset[int] = frozenset()  # an enum's values
    message_type: Descriptor | None = None


def check_request(request: Message) -> None:
    """Raises InvalidArgument naming the first field of REQUEST that breaks a rule above."""
    _check(request, "")


def _check(message: Message, prefix: str) -> None:
    for rule in _rules(message.DESCRIPTOR):
        path = prefix + rule.name
        value = getattr(message, rule.name)
        if rule.kind == "map":
            entry = {r.name: r for r in _rules(cast(Descriptor, rule.message_type))}
            for key, item in value.items():
                if "key" in entry:
                    _check_value(entry["key"], key, path)
                if "value" in entry:
                    _check_value(entry["value"], item, path)
        elif rule.repeated:
            for item in value:
                _check_value(rule, item, path)
        elif rule.kind not in ("time", "message") or message.HasField(rule.name):
            _check_value(rule, value, path)


def _check_value(rule: _Rule, value: Any, path: str) -> None:
    if rule.kind == "text":
        _check_text(value, path)
    elif rule.kind == "enum":
        if value not in rule.defined:
            raise InvalidArgument(f"{path} is not one of the values its enum defines", field=path)
    elif rule.kind == "time":
        _check_time(value, path)
    else:
        _check(value, path + ".")


@functools.cache
def _rules(descriptor: Descriptor) -> tuple[_Rule, ...]:
    """The checks of a message type's fields, worked out once per type."""
    rules = []
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            rules.append(_Rule(field.name, "text", field.is_repeated))
        elif field.type == FieldDescriptor.TYPE_ENUM:
            values = cast(EnumDescriptor, field.enum_type).values_by_number
            rules.append(_Rule(field.name, "enum", field.is_repeated, frozenset(values)))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            message_type = cast(Descriptor, field.message_type)
            if message_type.GetOptions().map_entry:
                kind = "map"
            elif message_type.full_name == _TIMESTAMP:
                kind = "time"
            else:
                kind = "message"
            rules.append(_Rule(field.name, kind, field.is_repeated, message_type=message_type))
    return tuple(rules)


def _check_text(value: str, path: str) -> None:
    if len(value) > MAX_TEXT_LENGTH:
        raise InvalidArgument(f"{path} is longer than {MAX_TEXT_LENGTH} characters", field=path)
    if "\x00" in value:
        raise InvalidArgument(f"{path} must not contain a NUL character", field=path)


def _check_time(time: timestamp_pb2.Timestamp, path: str) -> None:
    if not (MIN_SECONDS <= time.seconds <= MAX_SECONDS and 0 <= time.nanos <= MAX_NANOS):
        raise InvalidArgument(
            f"{path} must be a time from year 1 to 9999: seconds {MIN_SECONDS} to "
            f"{MAX_SECONDS}, nanos 0 to {MAX_NANOS}",
            field=path,
        )


# -- bytes that do not parse ---------------------------------------------------------------------


def malformed_reader(method: str) -> Callable[[bytes], Malformed]:
    """What to make of bytes that do not parse as METHOD's request ("/package.Service/Name")."""
    request_type = _request_type(method)

    def describe(data: bytes) -> Malformed:
        if request_type is None:
            return Malformed("", "its bytes do not parse")
        field, problem = _first_bad_field(request_type, data)
        return Malformed(field, problem)

    return describe


def _request_type(method: str) -> Descriptor | None:
    service, _, name = method.lstrip("/").rpartition("/")
    try:
        found = descriptor_pool.Default().FindMethodByName(f"{service}.{name}")
    except KeyError:
        return None
    request_type: Descriptor = found.input_type
    return request_type


class _CutShort(Exception):
    """The bytes end inside a field."""


def _first_bad_field(descriptor: Descriptor, data: bytes) -> tuple[str, str]:
    """The path of the field where DATA stops being a DESCRIPTOR message, and why ('' for
    the path when no field can be named)."""
    found = _bad_field(descriptor, memoryview(data), "")
    if found is None:  # the walk below found nothing the parser would refuse
        return "", "its bytes do not parse"
    return found


def _bad_field(descriptor: Descriptor, data: memoryview, prefix: str) -> tuple[str, str] | None:
    position = 0
    while position < len(data):
        container = prefix[:-1]
        try:
            key, position = _varint(data, position)
        except _CutShort:
            return container, f"{container or 'the request'} is cut short"
        except ValueError:
            return container, f"{container or 'the request'} is not in the protobuf wire format"
        number, wire_type = key >> 3, key & 7
        field = descriptor.fields_by_number.get(number)
        path = prefix + field.name if field is not None else container
        try:
            position, body = _skip(data, position, wire_type)
        except _CutShort:
            return path, f"{path or 'the request'} is cut short"
        except ValueError:
            return path, f"{path or 'the request'} is not in the protobuf wire format"
        if number == 0:
            return path, "field number 0 does not exist"
        if field is None or body is None:
            continue
        if field.type == FieldDescriptor.TYPE_STRING:
            try:
                str(body, "utf-8")  # strict: no lone surrogates, no overlong forms
            except UnicodeDecodeError:
                return path, f"{path} is not valid UTF-8 text"
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            inner = _bad_field(cast(Descriptor, field.message_type), body, path + ".")
            if inner is not None:
                return inner
    return None


def _skip(data: memoryview, position: int, wire_type: int) -> tuple[int, memoryview | None]:
    """The position after the field's value, and the value when it is length-delimited."""
    if wire_type == 0:
        return _varint(data, position)[1], None
    sizes = {1: 8, 5: 4}
    if wire_type in sizes:
        end = position + sizes[wire_type]
    elif wire_type == 2:
        length, position = _varint(data, position)
        end = position + length
    else:  # groups (3, 4) belong to proto2 only; 6 and 7 do not exist
        raise ValueError(wire_type)
    if end > len(data):
        raise _CutShort
    return end, data[position:end] if wire_type == 2 else None


def _varint(data: memoryview, position: int) -> tuple[int, int]:
    value = shift = 0
    while position < len(data):
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
        if shift >= 70:  # ten bytes at most
            raise ValueError("varint too long")
    raise _CutShort
