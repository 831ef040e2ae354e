"""The only format that crosses between a site and its sandbox worker: JSON plus raw numeric arrays.

A message is a kind (``"job"``, ``"call"``, ``"result"``, ...), a tree of JSON values
(dicts with string keys, lists, strings, numbers, booleans, None) whose leaves may
also be numeric NumPy arrays, and optionally file descriptors (``SCM_RIGHTS``).
On the wire: an 8-byte length, the JSON header (the tree with each array replaced
by ``{"__array__": i}`` and the arrays' dtype and shape listed), then each array's
bytes. Never pickle: a worker's answer is parsed as data, with a size cap, and an
array of objects cannot be expressed at all.

Examples
--------
>>> import socket
>>> import numpy as np
>>> site, worker = socket.socketpair()
>>> send(site, "call", {"weights": {"w": np.ones((2, 2), np.float32)}, "rnd": 3})
>>> kind, tree, fds = receive(worker, max_bytes=2**20)
>>> kind, tree["rnd"], tree["weights"]["w"].sum().item(), fds
('call', 3, 4.0, [])
"""

from __future__ import annotations

import json
import os
import socket
import struct
from typing import Any

import numpy as np

__all__ = ["WireError", "receive", "send"]

_LENGTH = struct.Struct("!Q")
_ARRAY_KINDS = "biuf"  # bool, signed, unsigned, float: nothing that can hold an object
_MAX_FDS = 16


class WireError(ValueError):
    """A message that is not of the format, too large, or cut short."""


def _flatten(value: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(value, (np.ndarray, np.generic)) and not isinstance(value, (np.str_, np.bytes_)):
        array = np.asarray(value)
        if not array.flags.c_contiguous:
            array = array.copy(order="C")  # ascontiguousarray would turn a 0-d array into 1-d
        if array.dtype.kind not in _ARRAY_KINDS:
            raise WireError(f"arrays of dtype {array.dtype} cannot cross (numbers and booleans only)")
        arrays.append(array)
        return {"__array__": len(arrays) - 1}
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise WireError("dict keys must be strings")
        if "__array__" in value:
            raise WireError("'__array__' is a reserved key")
        return {key: _flatten(item, arrays) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_flatten(item, arrays) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise WireError(f"a {type(value).__name__} cannot cross (JSON values and numeric arrays only)")


def send(sock: socket.socket, kind: str, tree: Any, fds: list[int] | None = None) -> None:
    """Send one message: ``kind``, the tree of JSON values and arrays, and optional file descriptors.

    Parameters
    ----------
    sock : socket.socket
        A connected ``AF_UNIX`` stream socket.
    kind : str
        What the message is.
    tree : object
        JSON values whose leaves may be numeric NumPy arrays.
    fds : list of int, optional
        File descriptors to hand over (at most 16).

    Raises
    ------
    WireError
        The tree holds something other than JSON values and numeric arrays.
    """
    arrays: list[np.ndarray] = []
    header = {
        "kind": kind,
        "tree": _flatten(tree, arrays),
        "arrays": [{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrays],
    }
    head = json.dumps(header, allow_nan=True).encode()
    first = _LENGTH.pack(len(head)) + head
    if fds:
        if len(fds) > _MAX_FDS:
            raise WireError(f"at most {_MAX_FDS} file descriptors per message")
        socket.send_fds(sock, [first], fds)
    else:
        sock.sendall(first)
    for array in arrays:
        if array.size:
            sock.sendall(array.reshape(-1).view(np.uint8).data)


def _read_exactly(sock: socket.socket, size: int) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    while view:
        count = sock.recv_into(view)
        if count == 0:
            raise WireError("the other side closed the connection mid-message")
        view = view[count:]
    return buffer


def _read_header(sock: socket.socket, max_bytes: int) -> tuple[dict[str, Any], list[int]]:
    data, fds, _, _ = socket.recv_fds(sock, _LENGTH.size, _MAX_FDS)
    if not data:
        raise EOFError("the other side closed the connection")
    data = bytes(data) + bytes(_read_exactly(sock, _LENGTH.size - len(data)))
    (length,) = _LENGTH.unpack(data)
    if length > max_bytes:
        raise WireError(f"a message header of {length} bytes is over the cap of {max_bytes}")
    try:
        header = json.loads(bytes(_read_exactly(sock, length)))
    except json.JSONDecodeError as exc:
        raise WireError(f"a message header that is not JSON ({exc})") from exc
    if not isinstance(header, dict) or not isinstance(header.get("kind"), str):
        raise WireError("a message header without a kind")
    return header, list(fds)


def _read_arrays(sock: socket.socket, specs: Any, budget: int) -> list[np.ndarray]:
    if not isinstance(specs, list):
        raise WireError("a message whose array list is not a list")
    arrays = []
    for spec in specs:
        dtype = np.dtype(str(spec["dtype"]))
        shape = tuple(int(n) for n in spec["shape"])
        if dtype.kind not in _ARRAY_KINDS or any(n < 0 for n in shape):
            raise WireError(f"an array of dtype {dtype} and shape {shape} cannot cross")
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        budget -= size
        if budget < 0:
            raise WireError("a message over the size cap")
        arrays.append(np.frombuffer(_read_exactly(sock, size), dtype=dtype).reshape(shape))
    return arrays


def _rebuild(value: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            index = value["__array__"]
            if not isinstance(index, int) or not 0 <= index < len(arrays):
                raise WireError("an array reference out of range")
            return arrays[index]
        return {key: _rebuild(item, arrays) for key, item in value.items()}
    if isinstance(value, list):
        return [_rebuild(item, arrays) for item in value]
    return value


def receive(sock: socket.socket, *, max_bytes: int) -> tuple[str, Any, list[int]]:
    """Receive one message; refuse one over ``max_bytes`` in all.

    Parameters
    ----------
    sock : socket.socket
        A connected ``AF_UNIX`` stream socket.
    max_bytes : int
        The cap on the header and the arrays together.

    Returns
    -------
    tuple
        ``(kind, tree, fds)``: the tree with its arrays (read-only views of fresh
        buffers) and the file descriptors handed over (the receiver closes them).

    Raises
    ------
    WireError
        The message is not of the format, or over the cap.
    EOFError
        The other side closed the connection before a message began.
    """
    header, fds = _read_header(sock, max_bytes)
    try:
        arrays = _read_arrays(sock, header.get("arrays", []), max_bytes)
        return header["kind"], _rebuild(header.get("tree"), arrays), fds
    except (KeyError, TypeError, ValueError) as exc:
        for fd in fds:
            _close_quietly(fd)
        raise exc if isinstance(exc, WireError) else WireError(f"a malformed message ({exc})") from exc


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
