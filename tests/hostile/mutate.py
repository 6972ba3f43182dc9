"""Mutations of valid model files for the fuzzers: raw byte edits and edits of the safetensors
header's JSON (a field replaced by a huge, negative, non-finite, wrongly typed or deeply nested
value), which reach far deeper into the reader than random bytes do."""
from __future__ import annotations

import json
import random
from typing import Any, List

INTERESTING = [0, -1, 1, 2**31, 2**32, 2**53 + 1, 2**60, 2**61, 2**63 - 1, 2**63, 2**64,
               10**30, -2**63, 1.5, float("nan"), float("inf"), "", "x", "U500000000", None,
               True, [], {}, [[[[[[]]]]]], {"__ndarray__": [0], "dtype": "U500000000"},
               {"__ndarray__": [[1, 2], [3]], "dtype": "<i8"}]


def _split(data: bytes):
    if len(data) < 8:
        return None
    n = int.from_bytes(data[:8], "little")
    if not 2 <= n <= len(data) - 8:
        return None
    try:
        header = json.loads(data[8:8 + n])
    except (ValueError, RecursionError):
        return None
    return header, data[8 + n:]


def _join(header: Any, rest: bytes) -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + rest


def _paths(node, prefix=()) -> List[tuple]:
    """Every (container path) to a value in parsed JSON."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_paths(v, prefix + (i,)))
    return out


def _set(node, path, value):
    if not path:
        return value
    parent = node
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return node


def _get(node, path):
    for key in path:
        node = node[key]
    return node


def _mutate_json(value, rng: random.Random):
    paths = _paths(value)
    path = rng.choice(paths)
    choice = rng.random()
    if choice < 0.6:
        new = rng.choice(INTERESTING)
    elif choice < 0.75:
        new = "[" * rng.randint(60, 5000)  # unbalanced or deep text
    elif choice < 0.9 and isinstance(_get(value, path), (dict, list)) and path:
        return _set(value, path[:-1] if isinstance(_get(value, path[:-1]), list) else path,
                    None)
    else:
        inner = _get(value, path)
        new = inner
        for _ in range(rng.randint(1, 80)):
            new = [new]
    return _set(value, path, new)


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One mutation of ``data``."""
    parts = _split(data)
    if parts is not None and rng.random() < 0.7:
        header, rest = parts
        meta = header.get("__metadata__", {}) if isinstance(header, dict) else {}
        if isinstance(meta, dict) and isinstance(meta.get("mlpcore"), str) and rng.random() < 0.6:
            try:
                inner = json.loads(meta["mlpcore"])
                meta["mlpcore"] = json.dumps(_mutate_json(inner, rng))
            except (ValueError, RecursionError):
                pass
        else:
            header = _mutate_json(header, rng)
        if rng.random() < 0.1:
            rest = rest[:rng.randint(0, len(rest))]
        return _join(header, rest)
    data = bytearray(data)
    op = rng.random()
    if op < 0.4 and data:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif op < 0.6 and data:
        at = rng.randrange(len(data))
        del data[at:at + rng.randint(1, 64)]
    elif op < 0.8:
        at = rng.randint(0, len(data))
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    else:
        at = rng.randrange(0, max(1, len(data) - 8))
        data[at:at + 8] = rng.choice([0, 2**63, 2**64 - 1, 2**31, len(data)]).to_bytes(8, "little")
    return bytes(data)
