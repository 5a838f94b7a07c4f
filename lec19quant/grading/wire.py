"""What crosses between the grader and a student's process: length-prefixed JSON messages.

The student's process is untrusted, so nothing it sends is unpickled. Answers are encoded as JSON
with tagged tensors, tuples and the checks' own small answer classes; decoding builds only those
(a class outside `lec19quant.checks` is refused), so a message can at worst be a wrong answer.
"""
import base64
import dataclasses
import json
import os
import select
import struct
import sys
import time

import numpy as np
import torch

MAX_MESSAGE = 256 * 2**20  # bytes; a longer message is refused unread
_DTYPES = {str(d): d for d in (torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64,
                               torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
                               torch.complex64, torch.complex128)}
_ANSWER_MODULES = "lec19quant.checks."


class WireError(RuntimeError):
    """A message that is not what the protocol allows: too long, cut short, or not decodable."""


def send(fd: int, message) -> None:
    """Write `message` (JSON-encodable after `encode`) to the file descriptor `fd`."""
    data = json.dumps(encode(message)).encode()
    data = struct.pack("<Q", len(data)) + data
    while data:
        data = data[os.write(fd, data):]


def receive(fd: int, seconds: float | None = None):
    """Read one message from `fd` and decode it. WireError when the other side sends garbage,
    closes the pipe, or (with `seconds`) has not sent the whole message in time."""
    deadline = None if seconds is None else time.monotonic() + seconds
    (size,) = struct.unpack("<Q", _read(fd, 8, deadline))
    if size > MAX_MESSAGE:
        raise WireError(f"a message of {size} bytes (at most {MAX_MESSAGE})")
    data = _read(fd, size, deadline)
    try:
        return decode(json.loads(data))
    except (ValueError, TypeError, KeyError, AttributeError, RuntimeError) as error:
        raise WireError(f"an unreadable message: {type(error).__name__}: {error}") from None


def _read(fd: int, size: int, deadline: float | None) -> bytes:
    chunks = []
    while size:
        if deadline is not None and not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            raise TimeoutError("no complete message in time")
        chunk = os.read(fd, min(size, 2**20))
        if not chunk:
            raise WireError("the other side closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def encode(value):
    """A JSON-ready form of `value`: None, bools, numbers, strings, lists, tuples, dicts, torch
    tensors, numpy arrays and scalars, and instances of classes from lec19quant.checks; anything
    else raises TypeError (the grader reports it as a wrong answer)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, complex):
        return {"complex": [value.real, value.imag]}
    if isinstance(value, (list, tuple)):
        return {"list" if isinstance(value, list) else "tuple": [encode(v) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, (np.ndarray, np.generic)):
        return {"numpy": encode(torch.from_numpy(np.ascontiguousarray(value)))}
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        if t.layout != torch.strided or str(t.dtype) not in _DTYPES:
            raise TypeError(f"a tensor of dtype {t.dtype} and layout {t.layout} cannot be sent")
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        return {"tensor": [str(t.dtype), list(t.shape), base64.b64encode(raw).decode()]}
    kind = type(value)
    if kind.__module__.startswith(_ANSWER_MODULES):
        fields = ({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
                  if dataclasses.is_dataclass(value) else vars(value))
        return {"object": [kind.__module__, kind.__qualname__, encode(fields)]}
    raise TypeError(f"a {kind.__module__}.{kind.__qualname__} cannot be sent")


def decode(value):
    """The value that `encode` encoded, built only from the types it allows."""
    if not isinstance(value, dict):
        if isinstance(value, list):
            raise ValueError("an untagged list")
        return value
    (tag, body), = value.items()
    if tag == "complex":
        return complex(*body)
    if tag in ("list", "tuple"):
        items = [decode(v) for v in body]
        return items if tag == "list" else tuple(items)
    if tag == "dict":
        return {decode(k): decode(v) for k, v in body}
    if tag == "numpy":
        return decode(body).numpy()
    if tag == "tensor":
        dtype, shape, raw = body
        raw = bytearray(base64.b64decode(raw, validate=True))
        flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        return flat.view(_DTYPES[dtype]).reshape([int(n) for n in shape])
    if tag == "object":
        module, qualname, fields = body
        kind = getattr(sys.modules.get(module) if module.startswith(_ANSWER_MODULES) else None, qualname, None)
        if not isinstance(kind, type) or kind.__module__ != module or kind.__qualname__ != qualname:
            raise ValueError(f"{module}.{qualname} is not an answer class of lec19quant.checks")
        obj = object.__new__(kind)
        for name, field in decode(fields).items():
            object.__setattr__(obj, str(name), field)
        return obj
    raise ValueError(f"an unknown tag {tag!r}")
