"""The Control port's edge: a request that is not a valid message is refused before any
handler sees it, with INVALID_ARGUMENT and a message that says what was wrong.

Without this, grpcio answers undecodable bytes with ``UNKNOWN`` and a Python exception
name ("Unexpected <class 'DecodeError'>"), an enum value the .proto does not define
(proto3 enums are open: any int32 decodes) reaches the handler and raises ``ValueError``
there, and a ``uint64`` above 2^63-1 overflows the store's signed 64-bit columns (issue 13).
The checks are generic, from each request's descriptor, so a new field or method is
covered without a line here:

- the bytes decode as the method's request type;
- every enum field, at any depth, holds a value its enum defines;
- every unsigned 64-bit field holds at most 2^63-1 (offsets, sizes, limits: the stores
  keep them signed).

:class:`EdgeGuard` wraps each handler's request deserializer; what it refuses reaches
the wrapped behaviour as a :class:`Refused`, which aborts the call. Client-streaming
methods get each message checked as it arrives, through the request iterator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

INT64_MAX = (1 << 63) - 1
Handler = "grpc.RpcMethodHandler[Any, Any]"


@dataclass(frozen=True, slots=True)
class Refused:
    """A request the edge refused; the handler wrapper aborts with ``message``."""

    message: str


@dataclass(frozen=True, slots=True)
class _Check:
    """One field of a message type that can hold an out-of-range value."""

    name: str
    repeated: bool
    enum_values: frozenset[int] | None = None  # an enum: the numbers it defines
    enum_text: str = ""
    message: Descriptor | None = None  # a message (or map value message) to descend into
    map_values: bool = False  # a map: check its values
    uint64: bool = False


_PLANS: dict[str, tuple[_Check, ...]] = {}


def _plan(descriptor: Descriptor) -> tuple[_Check, ...]:
    """The fields of ``descriptor`` worth checking, computed once per type: most fields
    (strings, bools, 32-bit numbers, maps of strings) cannot be out of range, and
    walking them cost SubmitMany 38 µs a task."""
    key = descriptor.full_name
    if (plan := _PLANS.get(key)) is not None:
        return plan
    _PLANS[key] = ()  # a recursive type: its own fields are being planned
    checks: list[_Check] = []
    for field in descriptor.fields:
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            value = entry.fields_by_name["value"]
            if value.message_type is not None and _plan(value.message_type):
                checks.append(_Check(field.name, True, message=value.message_type,
                                     map_values=True))
            elif value.type == FieldDescriptor.TYPE_ENUM and value.enum_type is not None:
                checks.append(_enum_check(field.name, value, map_values=True))
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE and entry is not None:
            if _plan(entry):
                checks.append(_Check(field.name, field.is_repeated, message=entry))
        elif field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
            checks.append(_enum_check(field.name, field))
        elif field.type in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
            checks.append(_Check(field.name, field.is_repeated, uint64=True))
    plan = _PLANS[key] = tuple(checks)
    return plan


def _enum_check(name: str, field: FieldDescriptor, map_values: bool = False) -> _Check:
    enum = field.enum_type
    assert enum is not None
    known = ", ".join(v.name for v in enum.values)
    return _Check(name, field.is_repeated or map_values,
                  enum_values=frozenset(enum.values_by_number),
                  enum_text=f"is not a {enum.name} ({known})", map_values=map_values)


def check_message(message: Message, path: str = "") -> str | None:
    """The first enum or uint64 field of ``message`` out of range, as a sentence."""
    for check in _plan(cast(Descriptor, message.DESCRIPTOR)):
        value = getattr(message, check.name)
        if check.map_values:
            values = list(value.values())
        elif check.repeated:
            values = list(value)
        elif check.message is not None:
            if not message.HasField(check.name):
                continue
            values = [value]
        else:
            values = [value]
        name = f"{path}{check.name}"
        for item in values:
            if check.message is not None:
                problem = check_message(item, name + ".")
                if problem is not None:
                    return problem
            elif check.enum_values is not None:
                if item not in check.enum_values:
                    return f"{name}: {item} {check.enum_text}"
            elif check.uint64 and item > INT64_MAX:
                return f"{name}: {item} is beyond the largest value, {INT64_MAX}"
    return None


def _type_name(deserializer: Callable[[bytes], Any]) -> str:
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "request"))


def checked_deserializer(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    type_name = _type_name(deserializer)

    def decode(data: bytes) -> Any:
        try:
            message = deserializer(data)
        except Exception as e:  # DecodeError, or anything a parser raises on bad bytes
            return Refused(f"the request is not a valid {type_name}: {e}")
        problem = check_message(message) if isinstance(message, Message) else None
        return Refused(f"{type_name}.{problem}") if problem else message

    return decode


async def _refuse(context: grpc.aio.ServicerContext[Any, Any], refused: Refused) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, refused.message)


async def _checked_requests(requests: AsyncIterator[Any],
                            context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Refused):
            await _refuse(context, request)
        yield request


def guarded(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with its requests checked; unchanged when it has no deserializer."""
    if handler.request_deserializer is None:
        return handler
    kw = {"request_deserializer": checked_deserializer(handler.request_deserializer),
          "response_serializer": handler.response_serializer}
    if handler.request_streaming:
        inner_stream: Any = handler.stream_stream or handler.stream_unary

        if handler.response_streaming:
            async def stream_stream(requests: AsyncIterator[Any],
                                    context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                async for response in inner_stream(_checked_requests(requests, context),
                                                   context):
                    yield response
            return grpc.stream_stream_rpc_method_handler(stream_stream, **kw)

        async def stream_unary(requests: AsyncIterator[Any],
                               context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            return await inner_stream(_checked_requests(requests, context), context)
        return grpc.stream_unary_rpc_method_handler(stream_unary, **kw)

    if handler.response_streaming:
        inner_out: Any = handler.unary_stream

        async def unary_stream(request: Any,
                               context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, Refused):
                await _refuse(context, request)
            result = inner_out(request, context)
            if hasattr(result, "__aiter__"):
                async for response in result:
                    yield response
            else:  # a coroutine that writes with context.write()
                await result
        return grpc.unary_stream_rpc_method_handler(unary_stream, **kw)

    inner: Any = handler.unary_unary

    async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if isinstance(request, Refused):
            await _refuse(context, request)
        return await inner(request, context)
    return grpc.unary_unary_rpc_method_handler(unary_unary, **kw)


if TYPE_CHECKING:
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # grpcio's runtime class is not generic; only the stubs are
    _Interceptor = grpc.aio.ServerInterceptor


class EdgeGuard(_Interceptor):
    """Checks every request of every method on the server it is installed on."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails],
                               Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(details)
        return handler if handler is None else guarded(handler)
