"""The torchrun-style environment of a rank (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``), read strictly before any process group is built.

Each variable that is set must be usable: ASCII digits for the numbers, ``0 <= RANK <
WORLD_SIZE``, a world size within the executor's limit, a port in 1..65535, an address that is
a host name or an IP address. A problem is one ConfigError naming the variable (exit code 2).
Setting some of the torchrun variables but not all is refused as well: the run would otherwise
spawn local ranks and silently ignore them. The rendezvous itself is bounded by the run's
``--timeout`` (a peer that never joins, an address nobody listens on) and its failure is one line
(:class:`validate.executor.launch.RankFailure`, exit code 1), see :func:`validate.executor.launch.run_from_env`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from dicesim.errors import ConfigError
from dicesim.limits import MAX_WORLD_SIZE
from dicesim.strict_table import ascii_int

#: the variables torchrun sets for every rank
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_HOST = re.compile(r"\[?[0-9A-Fa-f:.]+\]?|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", re.ASCII)


@dataclass(frozen=True)
class RankEnv:
    """One rank's place in a torchrun launch."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


def _int(env: Mapping[str, str], name: str, low: int, high: int) -> int:
    raw = env[name]
    value = ascii_int(raw)
    if value is None or not low <= value <= high:
        raise ConfigError(name, f"environment variable is {raw[:40]!r}", f"integers {low}..{high} (ASCII digits)")
    return value


def torchrun_requested(env: Mapping[str, str] | None = None) -> bool:
    """Whether any torchrun variable other than ``RANK`` (which other tools set too) is present."""
    env = os.environ if env is None else env
    return any(k in env for k in TORCHRUN_VARS[1:])


def read_rank_env(env: Mapping[str, str] | None = None) -> RankEnv:
    """The validated torchrun variables; ConfigError naming the first unusable one."""
    env = os.environ if env is None else env
    missing = [k for k in TORCHRUN_VARS if k not in env]
    if missing:
        raise ConfigError(missing[0], "is not set, but other torchrun variables are "
                          f"({', '.join(k for k in TORCHRUN_VARS if k in env)})", "all of " + ", ".join(TORCHRUN_VARS))
    world_size = _int(env, "WORLD_SIZE", 1, MAX_WORLD_SIZE)
    rank = _int(env, "RANK", 0, world_size - 1)
    local_rank = _int(env, "LOCAL_RANK", 0, world_size - 1) if "LOCAL_RANK" in env else rank
    port = _int(env, "MASTER_PORT", 1, 65535)
    addr = env["MASTER_ADDR"].strip()
    if not _HOST.fullmatch(addr):
        raise ConfigError("MASTER_ADDR", f"environment variable is {addr[:60]!r}", "a host name or an IP address")
    return RankEnv(rank=rank, world_size=world_size, local_rank=local_rank, master_addr=addr, master_port=port)
