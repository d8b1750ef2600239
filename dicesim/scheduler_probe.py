"""``--scheduler ADDRESS`` checked before a Dask client is built: the address, and the server.

A Dask client trusts what the other end sends: connected to a port that accepts and never
answers it waited without bound, and connected to a server that is not Dask it read the
server's first bytes as a frame length and tried to allocate exabytes. So before any client
exists, :func:`check_scheduler`

1. parses the address: ``tcp://host:port``, ``tls://host:port`` or ``host:port`` (TCP), host a
   name, an IPv4 address or a bracketed IPv6 address, port 1..65535 in ASCII digits; anything
   else (another protocol, a missing port, ``inproc://``) is one line naming ``--scheduler``;
2. connects within ``SCHEDULER_CONNECT_TIMEOUT_S``;
3. for TCP, reads the handshake a Dask scheduler sends first (an 8-byte little-endian length,
   then frames holding a small msgpack map with ``compression``, ``python`` and
   ``pickle-protocol``) within the same time and at most ``MAX_SCHEDULER_HANDSHAKE_BYTES``:
   silence, a length past the bound or anything else is "not a Dask scheduler".

The probe's connection is closed at once; the real client connects afterwards with a timeout
(:mod:`dicesim.cluster`), and waits for workers at most ``SCHEDULER_WORKERS_TIMEOUT_S``.
"""

from __future__ import annotations

import re
import socket
import struct
import time

from dicesim import limits
from dicesim.errors import ConfigError

_ADDRESS = re.compile(r"(?:(?P<scheme>[a-z]+)://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})",
                      re.ASCII)
SCHEMES = ("tcp", "tls")
_ALLOWED = "tcp://HOST:PORT, tls://HOST:PORT or HOST:PORT"


def _fail(address: str, problem: str) -> ConfigError:
    return ConfigError("--scheduler", f"{address[:120]!r}: {problem}", _ALLOWED)


def parse_address(address: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of a scheduler address; ConfigError naming ``--scheduler`` otherwise."""
    m = _ADDRESS.fullmatch(address.strip())
    if m is None:
        raise _fail(address, "not a Dask scheduler address")
    scheme = m.group("scheme") or "tcp"
    if scheme not in SCHEMES:
        raise _fail(address, f"protocol {scheme!r} is not one a Dask scheduler is reached by here")
    port = int(m.group("port"))
    if not 1 <= port <= 65535:
        raise _fail(address, f"port {port} is out of range (1..65535)")
    return scheme, m.group("host").strip("[]"), port


def _read_exactly(sock: socket.socket, n: int, deadline: float) -> bytes:
    buf = b""
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buf += chunk
    return buf


def _looks_like_dask(frames: bytes) -> bool:
    """Whether ``frames`` (after the 8-byte length) hold Dask's handshake map."""
    try:
        import msgpack

        (count,) = struct.unpack_from("<Q", frames, 0)
        if not 1 <= count <= 16:
            return False
        sizes = struct.unpack_from(f"<{count}Q", frames, 8)
        body = frames[8 + 8 * count: 8 + 8 * count + sizes[0]]
        msg = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception:  # noqa: BLE001 -- any decoding failure means: not Dask's handshake
        return False
    return isinstance(msg, dict) and "pickle-protocol" in msg


def check_scheduler(address: str, *, timeout_s: float | None = None) -> str:
    """The address, once a Dask scheduler has answered there (see the module docstring).

    An ``inproc://`` address (a cluster in this very process, as tests start) is not probed: it
    has no socket, and a malformed one fails in the client, caught by :mod:`dicesim.cluster`.
    """
    if address.startswith("inproc://"):
        return address
    timeout_s = limits.SCHEDULER_CONNECT_TIMEOUT_S if timeout_s is None else timeout_s
    scheme, host, port = parse_address(address)
    deadline = time.monotonic() + timeout_s
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except socket.gaierror as exc:
        raise _fail(address, f"unknown host {host!r} ({exc.strerror or exc})") from None
    except (TimeoutError, socket.timeout):
        raise _fail(address, f"no connection within {timeout_s:g} s") from None
    except OSError as exc:
        raise _fail(address, f"cannot connect ({exc.strerror or exc})") from None
    with sock:
        if scheme != "tcp":  # TLS speaks first from our side; the client's own timeout bounds it
            return address
        try:
            head = _read_exactly(sock, 8, deadline)
            (nbytes,) = struct.unpack("<Q", head)
            if not 16 <= nbytes <= limits.MAX_SCHEDULER_HANDSHAKE_BYTES:
                raise _fail(address, f"the server's first message announces {nbytes:,} bytes; not a Dask scheduler")
            frames = _read_exactly(sock, nbytes, deadline)
        except (TimeoutError, socket.timeout):
            raise _fail(address, f"connected, but no Dask handshake within {timeout_s:g} s; not a Dask scheduler "
                                 "(or not answering)") from None
        except OSError as exc:
            raise _fail(address, f"connection lost during the handshake ({exc.strerror or exc})") from None
        if not _looks_like_dask(frames):
            raise _fail(address, "the server's first message is not a Dask handshake; not a Dask scheduler")
    return address
