"""Names checked as CONTRACT.md says, and the Redis keys of a tenant (src/keys.rs).

Every key of a tenant carries the tenant in braces (``{prefix}:{<tenant>}:…``): a Redis
Cluster hash tag, so a script touching the lane, a task's record, the record index, the events
stream, the waiters and the stats buckets of one tenant runs on one slot.
"""

from __future__ import annotations

from .errors import InvalidTask

#: Longest tenant name, in bytes.
MAX_TENANT_LEN = 64
#: Longest kind, in bytes.
MAX_KIND_LEN = 64
#: Longest task id, in bytes.
MAX_TASK_ID_LEN = 128

BASE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
TENANT_CHARS = BASE | {"."}
KIND_CHARS = BASE | {".", ":", "/"}
TASK_ID_CHARS = BASE | {".", ":", "/", "@", "+", "="}


def check_name(what: str, value: object, limit: int, allowed: frozenset[str]) -> str:
    """``value`` when it is a non-empty string of at most ``limit`` bytes of ``allowed``
    characters; otherwise raises :class:`InvalidTask` naming ``what``."""
    if not isinstance(value, str):
        raise InvalidTask(what, f"{what} must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidTask(what, f"{what} must not be empty")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise InvalidTask(
            what, f"{what} '{value[:16]}…' is {size} bytes long; the limit is {limit}"
        )
    for ch in value:
        if ch not in allowed:
            extra = "".join(f", '{c}'" for c in sorted(allowed - BASE))
            raise InvalidTask(
                what,
                f"{what} {value!r} contains {ch!r}; allowed are ASCII letters, digits, "
                f"'_', '-'{extra}",
            )
    return value


def check_tenant(tenant: object) -> str:
    """``tenant`` when valid (CONTRACT.md); raises :class:`InvalidTask` otherwise."""
    return check_name("tenant", tenant, MAX_TENANT_LEN, TENANT_CHARS)


def check_task_id(task_id: object) -> str:
    """``task_id`` when valid (CONTRACT.md); raises :class:`InvalidTask` otherwise."""
    return check_name("task_id", task_id, MAX_TASK_ID_LEN, TASK_ID_CHARS)


def check_prefix(prefix: str) -> str:
    """``prefix`` when it is a valid ``redis.key_prefix``; raises ``ValueError`` otherwise."""
    allowed = BASE | {".", ":"}
    if (
        not isinstance(prefix, str)
        or not prefix
        or len(prefix) > 64
        or any(c not in allowed for c in prefix)
    ):
        raise ValueError(
            f"key_prefix {prefix!r} is invalid: use 1 to 64 ASCII letters, digits, '_', '-', "
            "'.', ':' (the fleet's redis.key_prefix)"
        )
    return prefix


#: The fleet's default consumer group (``fleet.group``).
DEFAULT_GROUP = "redrive"


def check_group(group: str) -> str:
    """``group`` when it is a valid consumer group name (the fleet's ``fleet.group``: 1 to 64
    ASCII letters, digits, ``_``, ``-``, ``.``); raises ``ValueError`` otherwise."""
    allowed = BASE | {"."}
    if (
        not isinstance(group, str)
        or not group
        or len(group) > 64
        or any(c not in allowed for c in group)
    ):
        raise ValueError(
            f"group {group!r} is invalid: use 1 to 64 ASCII letters, digits, '_', '-', '.' "
            "(the fleet's fleet.group)"
        )
    return group


def lane_key(prefix: str, tenant: str) -> str:
    """The tenant's lane: ``{prefix}:{<tenant>}:lane`` (the braces are a Redis Cluster hash
    tag shared by every key of the tenant)."""
    return f"{prefix}:{{{tenant}}}:lane"


def tenants_key(prefix: str) -> str:
    """The registry of tenants the fleet discovers lanes from."""
    return f"{prefix}:tenants"


def tenant_signals(prefix: str) -> str:
    """The pub/sub channel ``{prefix}:tenants:new`` a producer publishes on (the batch's
    tenants, comma-separated) after an enqueue whose registration added a tenant, so members
    serve it at once. Not a key: it holds nothing, and the registry stays the truth (a member
    that missed a message finds the tenant by its periodic look)."""
    return f"{prefix}:tenants:new"


def task_prefix(prefix: str, tenant: str) -> str:
    """The start of the names of a tenant's task records: ``{prefix}:{<tenant>}:task:``."""
    return f"{prefix}:{{{tenant}}}:task:"


def task_key(prefix: str, tenant: str, task_id: str) -> str:
    """The record of one task: the HASH ``{prefix}:{<tenant>}:task:<task_id>``."""
    return task_prefix(prefix, tenant) + task_id


def tasks_key(prefix: str, tenant: str) -> str:
    """The index of a tenant's records: the ZSET ``{prefix}:{<tenant>}:tasks`` (member
    task_id, score the record's last change in ms)."""
    return f"{prefix}:{{{tenant}}}:tasks"


def done_log_prefix(prefix: str, tenant: str) -> str:
    """The start of the names of a tenant's done logs ``{prefix}:{<tenant>}:done:<second>``:
    streams of the facts (member, start, end, output) of tasks done without a record write,
    one per second of their lane entries' ids; task_read.lua reads them."""
    return f"{prefix}:{{{tenant}}}:done:"


def events_key(prefix: str, tenant: str) -> str:
    """The tenant's events stream ``{prefix}:{<tenant>}:events``: one entry (``task``,
    ``state``, ``entry``) per task that finishes while someone waits (see
    :func:`waiters_key`); what ``wait`` blocks on."""
    return f"{prefix}:{{{tenant}}}:events"


def waiters_key(prefix: str, tenant: str) -> str:
    """The tenant's waiters: the ZSET ``{prefix}:{<tenant>}:waiters`` (member a waiter's
    unique id, score when its registration expires, ms by the Redis server's clock). The
    fleet writes an events entry for a finish only while it holds a live member."""
    return f"{prefix}:{{{tenant}}}:waiters"


def stats_prefix(prefix: str, tenant: str) -> str:
    """The start of the names of a tenant's per-minute stats buckets (scripts append the
    minute by the server's clock)."""
    return f"{prefix}:{{{tenant}}}:stats:"
