"""The real datastore: redis-py against one Redis server.

``RedisStore`` performs the store effects of ``common.effects`` (one ``StoreCommand``
is one Redis command, one ``Transaction`` is one Lua script) and gives exactly the
Python values ``sim.store.SimStore`` gives, so a runner can hold either.

*Features*

- Every ``StoreCommand`` in ``common.effects``, with the reply types SimStore gives:
  SETNX -> bool, ZINCRBY/ZSCORE -> float, HGETALL -> dict, SMEMBERS -> set,
  ZRANGEBYSCORE and ZRANGE -> list of ``(member, float)``, ZMSCORE -> list of float or
  None, counters -> int (replies are decoded to ``str``, RESP2 is pinned).
- Batches (``common.effects.Batch``) in one round trip: a pipeline without MULTI.
- A key prefix per deployment (default ``"novalab:"``): every key argument, including
  the keys of guards, is prefixed on the way out, and ``dump()`` strips it on the way
  back, so several runs or test sessions can share one Redis database.
- Guarded transactions in one round trip: a Lua script, loaded once and called with
  EVALSHA (EVAL when the server answers NOSCRIPT, e.g. after a restart), checks every
  guard and runs the ops only if all hold. Redis runs a script without interleaving
  another client's command, which is the atomicity ``SimStore`` gets from running a
  transaction at one instant of virtual time.
- ``dump()`` and ``flush()`` walk only the keys under the prefix (SCAN, never KEYS).
- Thread-safe: the client uses redis-py's connection pool, so worker threads can share
  one store.

*Not supported*

- Redis Cluster: a transaction's keys are declared in KEYS, but they would have to
  share one hash slot, and nothing here makes them (use ``{...}`` hash tags in keys).
- Sentinel failover, replicas and read-your-writes across them: one server only.
- Silent retries: redis-py's own retry policy is switched off. When the server cannot be
  reached or does not answer in time the call raises ``StoreUnavailable`` and the caller
  decides; after a timeout the command may or may not have run.
- Rollback: as in any Redis script (and in ``SimStore``), when an op of a transaction
  fails (e.g. WRONGTYPE) the script stops, the ops before it stay written and redis-py's
  ``ResponseError`` is raised.
- RESP3 (``?protocol=3`` in the URL is refused), pub/sub, blocking commands, commands
  that are not store effects.
- A consistent snapshot in ``dump()``: keys are read in batches while others may write.

*Connection string*

``redis://[[username]:password@]host[:port][/db]`` (default
``redis://127.0.0.1:6379/0``), ``rediss://`` for TLS, or
``unix://[[username]:password@]/path/to/socket.sock?db=0``. Query options of redis-py's
``from_url`` (e.g. ``?socket_keepalive=true``) are accepted. A password in the URL never
appears in an error message.
"""

from __future__ import annotations

import hashlib
import json
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from common.effects import Batch, StoreCommand, Transaction
from common.errors import StoreUnavailable

DEFAULT_URL = "redis://127.0.0.1:6379/0"

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError)

# Which arguments of a command are keys: "first" = args[0], "all" = every argument.
# A command not listed is refused rather than sent with an unprefixed key.
_KEYS = {
    "GET": "first", "SETNX": "first", "DEL": "all",
    "HGET": "first", "HGETALL": "first", "HSET": "first", "HINCRBY": "first", "HDEL": "first",
    "SADD": "first", "SREM": "first", "SMEMBERS": "first", "SCARD": "first", "SPOP": "first",
    "ZADD": "first", "ZINCRBY": "first", "ZREM": "first", "ZSCORE": "first", "ZMSCORE": "first",
    "ZRANGEBYSCORE": "first", "ZRANGE": "first", "ZCOUNT": "first",
    "RPUSH": "first", "LRANGE": "first",
}  # fmt: skip


def _float_or_none(reply):
    return None if reply is None else float(reply)


def _pairs(reply):
    it = iter(reply)
    return list(zip(it, it, strict=True))


# How a script's reply (RESP2 shapes: int, str, None, flat list) becomes the value
# redis-py gives for the same command outside a script. Identity when not listed.
_FROM_SCRIPT = {
    "SETNX": bool,
    "HGETALL": lambda reply: dict(_pairs(reply)),
    "SMEMBERS": set,
    "ZINCRBY": _float_or_none,
    "ZSCORE": _float_or_none,
    "ZMSCORE": lambda reply: [_float_or_none(score) for score in reply],
    "ZRANGEBYSCORE": lambda reply: [(m, float(s)) for m, s in _pairs(reply)],
    "ZRANGE": lambda reply: [(m, float(s)) for m, s in _pairs(reply)],
}

#: The commands whose reply redis-py pairs up as (member, score) when told so.
_WITH_SCORES = frozenset({"ZRANGEBYSCORE", "ZRANGE"})

# Lua's unpack() stops at ~8,000 values, so a variadic op with more arguments is sent
# as several calls inside the same script; the results are combined so the caller sees
# one command's reply. Even, so HSET/ZADD pairs never straddle two calls.
_CHUNK = 4000
_COMBINE = {"RPUSH": lambda replies: replies[-1]}  # the others count: sum

# ARGV[1] = JSON [guards, ops]; guard = [field, expected or null], its key the next of
# KEYS; op = [command, number of keys, other args...], its keys the next of KEYS.
# Returns {1, results} or {0, index of the first guard that failed}.
_SCRIPT = """
local spec = cjson.decode(ARGV[1])
local k = 0
for i, guard in ipairs(spec[1]) do
  k = k + 1
  local value = redis.call('HGET', KEYS[k], guard[1])
  local expected = guard[2]
  if expected == cjson.null then
    if value ~= false then return {0, i} end
  elseif value ~= expected then
    return {0, i}
  end
end
local results = {}
for i, op in ipairs(spec[2]) do
  local call = {op[1]}
  for _ = 1, op[2] do
    k = k + 1
    call[#call + 1] = KEYS[k]
  end
  for j = 3, #op do call[#call + 1] = op[j] end
  results[i] = redis.call(unpack(call))
end
return {1, results}
"""
_SCRIPT_SHA = hashlib.sha1(_SCRIPT.encode()).hexdigest()


def _redacted(url: str) -> str:
    """``url`` with any password replaced by ``***`` (works on malformed URLs too)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable Redis URL>"
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _glob_escape(text: str) -> str:
    """``text`` as a literal SCAN MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisStore:
    """A ``common.performers.StorePerformer`` on a real Redis, like SimStore; see the
    module docstring.

    ``url``: where Redis is (see *Connection string*); ``prefix``: prepended to every
    key, must not be empty; ``socket_timeout``: seconds to wait for a connection or a
    reply before raising ``StoreUnavailable``. Nothing is sent until the first call.

    Raises ``ValueError`` for a bad URL or prefix. ``commands`` counts commands the way
    ``SimStore.commands`` does (one per effect, guards checked plus ops run for a
    transaction), even though a transaction is one round trip here.
    """

    def __init__(self, url: str = DEFAULT_URL, prefix: str = "novalab:", socket_timeout: float = 5.0):
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"RedisStore prefix must be a non-empty string (flush() deletes every key under it), got {prefix!r}")
        self.url = url
        self.prefix = prefix
        self.commands = 0
        self._shown_url = _redacted(url) if isinstance(url, str) else repr(url)
        self.client = self._connect(url, socket_timeout)
        self._encoder = self.client.connection_pool.get_encoder()

    def _connect(self, url, socket_timeout) -> redis.Redis:
        expected = "expected redis://[[user]:password@]host[:port][/db], rediss://... or unix:///path"
        if not isinstance(url, str):
            raise ValueError(f"Redis URL must be a string, got {url!r}; {expected}")
        try:
            client = redis.Redis.from_url(
                url,
                decode_responses=True,
                protocol=2,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
                retry=Retry(NoBackoff(), 0),  # never resend a command behind the caller's back
            )
            # parse_url does not check these; a typo would otherwise surface at first use.
            kwargs = client.connection_pool.connection_kwargs
            parts = urlsplit(url)
            if parts.scheme in ("redis", "rediss"):
                if not parts.hostname:
                    raise ValueError("no host")
                if parts.path.strip("/") and not parts.path.strip("/").isdigit():
                    raise ValueError(f"database {parts.path.strip('/')!r} is not a number")
            if kwargs.get("protocol") not in (2, "2"):
                raise ValueError("only RESP2 is supported (drop ?protocol=)")
        except ValueError as e:
            raise ValueError(f"invalid Redis URL {self._shown_url!r}: {e}; {expected}") from None
        return client

    def __repr__(self):
        return f"RedisStore({self._shown_url!r}, prefix={self.prefix!r})"

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _unavailable(self, e: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"Redis at {self._shown_url} is unavailable: {type(e).__name__}: {e}")

    def _keyed(self, command: str, args: tuple) -> tuple[list, list]:
        """-> (prefixed keys, the other args) of a command's args."""
        where = _KEYS.get(command)
        if where is None:
            raise ValueError(f"RedisStore does not know which arguments of {command!r} are keys; add it to real.store._KEYS")
        if where == "all":
            return [self.prefix + k for k in args], []
        return [self.prefix + args[0]], list(args[1:])

    # -- effects -----------------------------------------------------------------

    def execute(self, command: StoreCommand):
        """Run one store effect as one Redis command; -> what ``SimStore.execute`` gives.

        Raises ``StoreUnavailable`` when Redis cannot be reached or does not answer
        within ``socket_timeout`` (not retried; after a timeout the command may have
        run), redis-py's ``ResponseError`` when Redis refuses the command (WRONGTYPE,
        not an integer, wrong number of arguments), ``ValueError`` for a command whose
        keys this store does not know how to prefix.
        """
        keys, rest = self._keyed(command.command, command.args)
        options = {"withscores": True} if command.command in _WITH_SCORES else {}
        self.commands += 1
        try:
            return self.client.execute_command(command.command, *keys, *rest, **options)
        except _UNAVAILABLE as e:
            raise self._unavailable(e) from e

    def batch(self, batch: Batch) -> list:
        """Run ``batch.ops`` in one round trip (a pipeline without MULTI); -> their
        results, as ``execute`` gives them. Not atomic. An op Redis refuses does not
        stop the others; the first ``ResponseError`` is raised after them all ran.
        Raises ``StoreUnavailable`` like ``execute`` (the ops may or may not have run)."""
        self.commands += len(batch.ops)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for op in batch.ops:
                    keys, rest = self._keyed(op.command, op.args)
                    options = {"withscores": True} if op.command in _WITH_SCORES else {}
                    pipe.execute_command(op.command, *keys, *rest, **options)
                return pipe.execute()
        except _UNAVAILABLE as e:
            raise self._unavailable(e) from e

    def transaction(self, tx: Transaction) -> list | None:
        """Run ``tx`` atomically in one round trip; -> the ops' results (as
        ``execute`` gives them), or None when a guard fails (then nothing was written).

        A guard holds when HGET key field equals ``expected`` (None: the field is
        absent). The guards are checked and the ops run inside one Lua script, so no
        other client's command lands in between. The keys are declared in KEYS; the
        rest of the spec travels JSON-encoded in ARGV[1]. The script is sent by SHA
        (EVALSHA); on NOSCRIPT (server restarted or SCRIPT FLUSH; nothing ran) it is
        sent once in full with EVAL, which also caches it again. An op with more
        arguments than Lua's unpack() takes (~8,000) is split into several calls inside
        the same script and its replies combined (counts summed, RPUSH's last length).

        Raises ``StoreUnavailable`` when Redis cannot be reached or does not answer in
        time (not retried; after a timeout the transaction may have committed), and
        ``ResponseError`` when an op fails inside the script: the ops before it stay
        written (Redis scripts do not roll back, nor does SimStore).
        """
        keys: list[str] = []
        guards = []
        for guard in tx.guards:
            keys.append(self.prefix + guard.key)
            guards.append([guard.field, guard.expected])
        ops, plan = [], []  # plan: (command, how many script calls it became)
        for op in tx.ops:
            op_keys, rest = self._keyed(op.command, op.args)
            rest = [self._encoder.encode(a).decode("utf-8") for a in rest]
            if len(op_keys) + len(rest) <= _CHUNK:
                pieces = [(op_keys, rest)]
            elif len(op_keys) > 1:  # DEL
                pieces = [(op_keys[i : i + _CHUNK], []) for i in range(0, len(op_keys), _CHUNK)]
            else:
                pieces = [(op_keys, rest[i : i + _CHUNK]) for i in range(0, len(rest), _CHUNK)]
            for piece_keys, piece_rest in pieces:
                keys.extend(piece_keys)
                ops.append([op.command, len(piece_keys), *piece_rest])
            plan.append((op.command, len(pieces)))
        spec = json.dumps([guards, ops], ensure_ascii=False, separators=(",", ":"))
        try:
            try:
                ok, reply = self.client.evalsha(_SCRIPT_SHA, len(keys), *keys, spec)
            except NoScriptError:
                ok, reply = self.client.eval(_SCRIPT, len(keys), *keys, spec)
        except _UNAVAILABLE as e:
            raise self._unavailable(e) from e
        if not ok:
            self.commands += reply  # the guards checked, as SimStore counts them
            return None
        self.commands += len(tx.guards) + len(tx.ops)
        results, at = [], 0
        for command, calls in plan:
            replies = reply[at : at + calls]
            at += calls
            if calls > 1:
                results.append(_COMBINE.get(command, sum)(replies))
            else:
                results.append(_FROM_SCRIPT.get(command, lambda r: r)(replies[0]))  # type: ignore[operator]  # all callables
        return results

    # -- instrumentation and housekeeping (not effects, not counted) ---------------

    def scard(self, key: str) -> int:
        """SCARD of ``key``, for metrics. Raises ``StoreUnavailable`` like ``execute``."""
        try:
            return self.client.scard(self.prefix + key)
        except _UNAVAILABLE as e:
            raise self._unavailable(e) from e

    def _scan(self, batch: int):
        """Yield lists of at most ``batch`` full key names under the prefix."""
        keys = []
        for key in self.client.scan_iter(match=_glob_escape(self.prefix) + "*", count=batch):
            keys.append(key)
            if len(keys) >= batch:
                yield keys
                keys = []
        if keys:
            yield keys

    def dump(self) -> dict:
        """-> every key under the prefix (prefix stripped) with its value, shaped as
        ``SimStore.dump`` shapes it: string -> str, hash -> dict, set -> set,
        list -> list, zset -> dict member -> float.

        Not a snapshot: keys are read in pipelined batches while other clients may
        write; a key deleted meanwhile is left out. Raises ``StoreUnavailable`` when
        Redis cannot be reached (nothing partial is returned).
        """
        readers = {
            "string": lambda p, k: p.get(k),
            "hash": lambda p, k: p.hgetall(k),
            "set": lambda p, k: p.smembers(k),
            "list": lambda p, k: p.lrange(k, 0, -1),
            "zset": lambda p, k: p.zrange(k, 0, -1, withscores=True),
        }
        out = {}
        try:
            for keys in self._scan(1000):
                with self.client.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.type(key)
                    types = pipe.execute()
                    read = [(key, kind) for key, kind in zip(keys, types, strict=True) if kind in readers]
                    for key, kind in read:
                        readers[kind](pipe, key)
                    values = pipe.execute()
                for (key, kind), value in zip(read, values, strict=True):
                    if value is None or (kind != "string" and not value):
                        continue  # deleted between TYPE and the read (Redis keeps no empty containers)
                    out[key[len(self.prefix) :]] = dict(value) if kind == "zset" else value
        except _UNAVAILABLE as e:
            raise self._unavailable(e) from e
        return out

    def flush(self) -> int:
        """Delete every key under the prefix (SCAN + UNLINK in batches of 500) and
        nothing else; -> how many were deleted.

        Not atomic: keys written meanwhile may survive. Raises ``StoreUnavailable``
        when Redis cannot be reached; the batches already unlinked stay deleted, and
        calling it again finishes the job.
        """
        deleted = 0
        try:
            for keys in self._scan(500):
                deleted += self.client.unlink(*keys)
        except _UNAVAILABLE as e:
            raise self._unavailable(e) from e
        return deleted

    def ping(self) -> bool:
        """-> True when Redis answers PING. Raises ``StoreUnavailable`` when it cannot
        be reached or does not answer within ``socket_timeout``."""
        try:
            return bool(self.client.ping())
        except _UNAVAILABLE as e:
            raise self._unavailable(e) from e

    def close(self) -> None:
        """Close the pooled connections. Never raises; the store reconnects if used again."""
        self.client.close()
