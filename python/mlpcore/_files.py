"""Model files on disk: atomic writes, and reads that trust nothing in the file.

A read checks the file system entry (a regular file: never a FIFO or a device, which could block
or never end), then the safetensors header (bounded length and JSON depth, whitelisted dtypes,
each tensor's byte range consistent with its shape and inside the file), and hands back the
parsed metadata and tensor table without reading any tensor data. The caller checks the tensor
table against what the metadata describes and only then reads the data: a small file cannot make
mlpcore allocate more than the file holds.

Writes go to a hidden temporary file beside the target (``.<name>.mlpcore-tmp-*``), created with
the mode the umask gives (or the replaced file's mode), and are renamed over the target. Temporary
files that a killed writer left behind are removed by the next save to the same target.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import secrets
import stat
import time
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional, Tuple

import numpy as np

from ._validation import beyond_memory, gib

#: the only tensor dtypes a model file may hold (safetensors names)
FILE_DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8")}
#: a header larger than this is not one mlpcore wrote (models of 10^4 layers need < 2 MiB)
MAX_HEADER_BYTES = 16 * 2**20
#: JSON nesting deeper than this is refused (mlpcore's own is < 10 plus 2 per Residual level)
MAX_JSON_DEPTH = 64
_MAX_TENSOR_RANK = 8


def describe(path) -> str:
    return repr(path) if isinstance(path, str) else repr(os.fspath(path))


def file_error(func: str, path, field: Optional[str], what: str) -> ValueError:
    """The one shape of a load error: function, file, field, what is wrong."""
    where = f" field {field}:" if field else ""
    return ValueError(f"{func}: {describe(path)}:{where} {what}")


# --- JSON ------------------------------------------------------------------------------------
def _depth(value) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                return depth
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_json(text, func: str, path, field: str):
    """JSON from a file: ValueError (naming the field) for bad syntax or nesting deeper than
    MAX_JSON_DEPTH, never a RecursionError."""
    try:
        if isinstance(text, (bytes, bytearray)):
            text = text.decode("utf-8")  # safetensors headers are UTF-8, whatever the BOM says
        value = json.loads(text)
    except RecursionError:
        raise file_error(func, path, field, f"JSON nested deeper than {MAX_JSON_DEPTH} "
                         "levels") from None
    except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError included
        raise file_error(func, path, field, f"not valid JSON ({exc})") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise file_error(func, path, field, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


# --- reading ---------------------------------------------------------------------------------
class TensorEntry(NamedTuple):
    dtype: np.dtype
    shape: Tuple[int, ...]
    begin: int  # byte offsets in the data section
    end: int


def _kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _check_regular(st: os.stat_result, func: str, path) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, f"{func}: {describe(path)} is a directory, "
                                "not a model file")
    if not stat.S_ISREG(st.st_mode):
        raise file_error(func, path, None, f"is {_kind_of(st.st_mode)}; model files are read "
                         "only from regular files")


def _read_exact(f, n: int, func: str, path, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise file_error(func, path, None, f"truncated: {what} needs {n} bytes, the file has "
                         f"{len(data)} left")
    return data


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tensor_entry(name: str, entry, data_len: int, func: str, path) -> TensorEntry:
    field = f"header[{name!r}]"
    if not isinstance(entry, dict):
        raise file_error(func, path, field, f"expected an object, got {type(entry).__name__}")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in FILE_DTYPES:
        raise file_error(func, path, f"{field}.dtype", f"tensor dtype {dtype!r} is not one a "
                         f"model file holds ({', '.join(FILE_DTYPES)})")
    if (not isinstance(shape, list) or len(shape) > _MAX_TENSOR_RANK
            or not all(_is_int(d) and d >= 0 for d in shape)):
        raise file_error(func, path, f"{field}.shape", f"expected a list of at most "
                         f"{_MAX_TENSOR_RANK} non-negative ints, got {shape!r:.80}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(_is_int(o) for o in offsets) or not 0 <= offsets[0] <= offsets[1]):
        raise file_error(func, path, f"{field}.data_offsets", f"expected [begin, end] with "
                         f"0 <= begin <= end, got {offsets!r:.80}")
    begin, end = offsets
    nbytes = math.prod(shape) * FILE_DTYPES[dtype].itemsize  # exact: Python ints
    if end - begin != nbytes:
        raise file_error(func, path, f"{field}.data_offsets", f"{end - begin} bytes for a "
                         f"{dtype} tensor of shape {tuple(shape)}, which needs {nbytes}")
    if end > data_len:
        raise file_error(func, path, f"{field}.data_offsets", f"ends at byte {end} of a data "
                         f"section of {data_len} bytes (truncated file?)")
    return TensorEntry(FILE_DTYPES[dtype], tuple(shape), begin, end)


class ModelFile:
    """An open safetensors file whose header has been checked. Use as a context manager;
    ``metadata`` is the parsed ``mlpcore`` JSON, ``tensors`` the checked tensor table;
    :meth:`read_tensors` reads the data (exactly the data section's bytes)."""

    def __init__(self, path, func: str, data: Optional[bytes] = None) -> None:
        self.path, self.func = path, func
        if data is not None:  # in-memory bytes (unpickling); ``path`` only names them
            self._file = io.BytesIO(data)
            self._parse_header(len(data))
            return
        try:
            _check_regular(os.stat(path), func, path)  # before opening: a FIFO would block
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, f"{func}: no such file: {describe(path)}") \
                from None
        # O_NONBLOCK: should the entry have become a FIFO since the stat, opening it does not
        # wait for a writer; the fstat below then refuses it
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags)
        self._file = open(fd, "rb")
        try:
            st = os.fstat(fd)
            _check_regular(st, func, path)
            self._parse_header(st.st_size)
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> "ModelFile":
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()

    def error(self, field: Optional[str], what: str) -> ValueError:
        return file_error(self.func, self.path, field, what)

    def _parse_header(self, size: int) -> None:
        not_ours = "not an mlpcore model file (or truncated/corrupted)"
        if size < 8:
            raise self.error(None, f"{not_ours}: {size} bytes, shorter than a safetensors "
                              "header length")
        header_len = int.from_bytes(_read_exact(self._file, 8, self.func, self.path,
                                                "the header length"), "little")
        if header_len < 2 or header_len > size - 8:
            raise self.error("header length", f"{not_ours}: says {header_len} bytes, the "
                              f"file has {size - 8} after it")
        if header_len > MAX_HEADER_BYTES:
            raise self.error("header length", f"{header_len} bytes, more than the "
                              f"{MAX_HEADER_BYTES} a model file's header may have")
        raw = _read_exact(self._file, header_len, self.func, self.path, "the header")
        header = parse_json(raw, self.func, self.path, "header")
        if not isinstance(header, dict):
            raise self.error("header", f"{not_ours}: expected a JSON object, got "
                              f"{type(header).__name__}")
        self.data_offset = 8 + header_len
        self.data_len = size - self.data_offset
        meta = header.pop("__metadata__", None)
        self.tensors: Dict[str, TensorEntry] = {
            name: _tensor_entry(name, entry, self.data_len, self.func, self.path)
            for name, entry in header.items()}
        self._check_layout()
        if not isinstance(meta, dict) or not isinstance(meta.get("mlpcore"), str):
            raise self.error("__metadata__.mlpcore", f"{not_ours}: no mlpcore metadata")
        self.metadata = parse_json(meta["mlpcore"], self.func, self.path, "__metadata__.mlpcore")
        if not isinstance(self.metadata, dict):
            raise self.error("__metadata__.mlpcore", f"expected a JSON object, got "
                              f"{type(self.metadata).__name__}")

    def _check_layout(self) -> None:
        """The tensors tile the data section exactly (as safetensors requires): no overlap, no
        gap, nothing after them, so the file is no larger than what it describes."""
        at = 0
        for name, entry in sorted(self.tensors.items(), key=lambda kv: kv[1][2:]):
            if entry.begin != at:
                raise self.error(f"header[{name!r}].data_offsets", f"starts at byte "
                                  f"{entry.begin}, expected {at} (tensors overlap or leave a gap)")
            at = entry.end
        if at != self.data_len:
            raise self.error(None, f"the tensors take {at} bytes but the data section has "
                              f"{self.data_len} (trailing bytes or truncated file)")

    def read_tensors(self) -> Dict[str, np.ndarray]:
        """Read-only arrays over one buffer holding exactly the data section."""
        self._file.seek(self.data_offset)
        # (past the machine's RAM the allocation would be granted, then killed when touched)
        total = beyond_memory(self.data_len)
        try:
            if total is not None:
                raise MemoryError(f"more than this machine's {gib(total)} of memory")
            buf = bytearray(self.data_len)
        except MemoryError as exc:
            why = str(exc) or "more than this process could allocate"
            raise MemoryError(f"{self.func}: {str(self.path)!r}: its tensors take "
                              f"{gib(self.data_len)}, {why}") from None
        view, got = memoryview(buf), 0
        while got < self.data_len:
            n = self._file.readinto(view[got:])
            if not n:
                raise self.error(None, f"truncated: the data section ends after {got} of "
                                  f"{self.data_len} bytes")
            got += n
        arrays = {}
        for name, e in self.tensors.items():
            count = (e.end - e.begin) // e.dtype.itemsize
            a = np.frombuffer(buf, e.dtype, count, e.begin).reshape(e.shape)
            a.flags.writeable = False
            arrays[name] = a
        return arrays


def first_nonfinite(array: np.ndarray, chunk: int = 1 << 20) -> Optional[int]:
    """Flat index of the first NaN/Inf in ``array``, or None; in chunks (no full-size mask)."""
    flat = array.reshape(-1)
    for start in range(0, flat.size, chunk):
        bad = ~np.isfinite(flat[start:start + chunk])
        if bad.any():
            return start + int(np.argmax(bad))
    return None


# --- writing ---------------------------------------------------------------------------------
_TMP_MARK = ".mlpcore-tmp-"
#: a temporary file untouched for this long belongs to a writer that is gone
STALE_TEMP_SECONDS = 15 * 60
_NODE = os.uname().nodename if hasattr(os, "uname") else ""
HOST_TAG = hashlib.sha1(_NODE.encode()).hexdigest()[:6]


def _temp_prefix(target: Path) -> str:
    return f".{target.name[:120]}{_TMP_MARK}"  # the name stays under NAME_MAX (255)


def _writer_gone(name: str, prefix: str) -> bool:
    """Whether the temp file's writer (host tag and pid in its name) was on this host and is
    no longer running."""
    parts = name[len(prefix):].split("-")
    if len(parts) != 3 or parts[0] != HOST_TAG or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive under another user, or cannot tell
        return False
    return False


def remove_stale_temps(target: Path) -> None:
    """Delete temporary files of earlier saves to ``target`` whose writer was killed."""
    prefix, now = _temp_prefix(target), time.time()
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and (now - st.st_mtime > STALE_TEMP_SECONDS
                                             or _writer_gone(entry.name[:-4], prefix)):
                os.unlink(entry.path)
        except OSError:
            pass


def save_target(path, func: str) -> Path:
    """The file a save to ``path`` replaces: a symlink is followed (the link stays and its
    target gets the new content, as ``open(path, "w")`` would), the folder must exist and the
    target, if present, must be a regular file."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{func}: path must be a str or os.PathLike, got {type(path).__name__}")
    name = os.fsdecode(os.fspath(path))
    if not name:
        raise ValueError(f"{func}: path is empty; expected a file name such as "
                         "'model.safetensors'")
    target = Path(os.path.realpath(name))
    if not target.parent.is_dir():  # (OSErrors, as open() would raise them)
        shown = Path(name).parent if not os.path.islink(name) else target.parent
        if target.parent.exists():
            raise NotADirectoryError(errno.ENOTDIR, f"{func}: {str(shown)!r} is not a folder "
                                     "(a file of that name exists); save into a folder")
        raise FileNotFoundError(errno.ENOENT, f"{func}: folder {str(shown)!r} does not exist; "
                                "create it first")
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return target
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, f"{func}: {name!r} is a directory; expected a "
                                "file name inside it")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{func}: {name!r} is {_kind_of(st.st_mode)}; models are saved only "
                         "to regular files (which a save replaces)")
    # The rename needs only the folder's permission: a file its owner write-protected would be
    # replaced where open(path, "wb") refuses
    if not os.access(target, os.W_OK):
        raise PermissionError(errno.EACCES, f"{func}: {name!r} is write-protected; make it "
                              "writable or save to another path", name)
    return target


def _create_temp(target: Path) -> Tuple[int, str]:
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)  # keep the replaced file's permissions
    except OSError:
        mode = 0o666  # a new file: the kernel applies the umask, as open(path, "w") does
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) \
        | getattr(os, "O_NOFOLLOW", 0)
    prefix = _temp_prefix(target)
    for _ in range(100):
        tmp = target.parent / f"{prefix}{HOST_TAG}-{os.getpid()}-{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, flags, mode)
        except FileExistsError:
            continue
        if mode != 0o666:
            os.fchmod(fd, mode)  # the umask must not narrow the replaced file's mode
        return fd, str(tmp)
    raise FileExistsError(errno.EEXIST, f"no free temporary file name beside {str(target)!r}")


def _sync_folder(folder: Path) -> None:
    """Make the rename durable (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _save_failed(exc: OSError, target: Path, what: str) -> OSError:
    """The OSError of a failed save, of the same kind, naming the file the user asked for (not
    the temporary file it failed on) and saying what became of it."""
    reason = exc.strerror or str(exc)
    return type(exc)(exc.errno, f"saving to {str(target)!r} failed: {reason}; {what}",
                     str(target))


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.
    ``path`` is the real target (see :func:`save_target`)."""
    target = Path(path)
    remove_stale_temps(target)
    kept = "the previous file is unchanged" if target.exists() else "nothing was written"
    try:
        fd, tmp = _create_temp(target)
    except OSError as exc:
        raise _save_failed(exc, target, f"{kept} (a save writes a temporary file in the same "
                           "folder, then renames it)") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _save_failed(exc, target, kept) from exc
        raise
    _sync_folder(target.parent)


def json_field(meta: Dict[str, Any], key: str, kind, func: str, path, field: str):
    """``meta[key]`` if it has the JSON type ``kind``; ValueError naming the field otherwise."""
    if key not in meta:
        raise file_error(func, path, field, "missing")
    value = meta[key]
    if kind is int:
        ok = _is_int(value)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        names = {dict: "an object", list: "a list", str: "a string", int: "an int",
                 float: "a number"}
        raise file_error(func, path, field, f"expected {names.get(kind, kind)}, got "
                         f"{type(value).__name__} {value!r:.60}")
    return value
