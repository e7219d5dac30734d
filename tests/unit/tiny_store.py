"""A handful of Redis commands over plain dicts, for the tests where another service's
write must land between a workflow's read and its write (a race, replayed by hand)."""

from common import effects as fx


def _in_range(score, low, high):
    def parse(bound):
        return bound.startswith("("), float(bound.lstrip("("))

    (lx, lo), (hx, hi) = parse(low), parse(high)
    return (score > lo if lx else score >= lo) and (score < hi if hx else score <= hi)


class TinyStore:
    """``data``: key -> dict (hash, or zset member -> score), set, or list."""

    def __init__(self, data, now=100.0):
        self.data, self.now, self.ids = data, now, 0

    def answer(self, e):
        d = self.data
        match e:
            case fx.Now():
                return self.now
            case fx.Record() | fx.Cast() | fx.Call() | fx.Destroy():
                return None
            case fx.EnsureVlan(vlan=vlan):
                return f"vlan{vlan}"
            case (fx.EnsureBridge() | fx.UpdateDhcp() | fx.BindFloating() | fx.UnbindFloating()
                  | fx.EnsureFloatingForward() | fx.RemoveFloatingForward()):
                return None  # network driver: done on the host, nothing in the store
            case fx.NewId(prefix=prefix):
                self.ids += 1
                return f"{prefix}-{self.ids}"
            case fx.Choose(options=options):
                return options[0]
            case fx.HGetAll(key=key):
                return dict(d.get(key, {}))
            case fx.HGet(key=key, field=field):
                return d.get(key, {}).get(field)
            case fx.HDel(key=key, fields=fields):
                h = d.get(key, {})
                gone = sum(h.pop(f, None) is not None for f in fields)
                if key in d and not h:
                    del d[key]  # Redis has no empty hashes
                return gone
            case fx.Get(key=key):
                return d.get(key)
            case fx.SetNX(key=key, value=value):
                if key in d:
                    return False
                d[key] = value
                return True
            case fx.SPop(key=key):
                s = d.get(key, set())
                if not s:
                    return None
                member = min(s)  # deterministic: the smallest member
                s.discard(member)
                return member
            case fx.SMembers(key=key):
                return set(d.get(key, set()))
            case fx.SCard(key=key):
                return len(d.get(key, set()))
            case fx.HSet(key=key, mapping=mapping):
                d.setdefault(key, {}).update(mapping)
                return len(mapping)
            case fx.HIncrBy(key=key, field=field, amount=amount):
                h = d.setdefault(key, {})
                h[field] = str(int(h.get(field, "0")) + amount)
                return int(h[field])
            case fx.Del(keys=keys):
                return sum(d.pop(k, None) is not None for k in keys)
            case fx.SAdd(key=key, members=members) | fx.SRem(key=key, members=members):
                s = d.setdefault(key, set())
                before = len(s)
                (s.update if isinstance(e, fx.SAdd) else s.difference_update)(members)
                return abs(len(s) - before)
            case fx.RPush(key=key, values=values):
                d.setdefault(key, []).extend(values)
                return len(d[key])
            case fx.ZAdd(key=key, mapping=mapping):
                z = d.setdefault(key, {})
                added = sum(member not in z for member in mapping)  # Redis counts new members only
                z.update(mapping)
                return added
            case fx.ZRem(key=key, members=members):
                return sum(d.get(key, {}).pop(m, None) is not None for m in members)
            case fx.ZIncrBy(key=key, amount=amount, member=member):
                z = d.setdefault(key, {})
                z[member] = z.get(member, 0.0) + amount
                return z[member]
            case fx.ZScore(key=key, member=member):
                return d.get(key, {}).get(member)
            case fx.ZMScore(key=key, members=members):
                return [d.get(key, {}).get(m) for m in members]
            case fx.ZCount():
                return len(self._by_score(e.key, e.min, e.max))
            case fx.ZRange(key=key, start=start, stop=stop):
                rows = self._by_score(key, "-inf", "+inf")
                size = len(rows)
                start, stop = (start + size if start < 0 else start), (stop + size if stop < 0 else stop)
                return rows[max(start, 0):stop + 1] if stop >= 0 else []
            case fx.ZRangeByScore():
                rows = self._by_score(e.key, e.min, e.max)
                return rows if e.count is None else rows[: e.count]
            case fx.Transaction(ops=ops, guards=guards):
                if any(d.get(g.key, {}).get(g.field) != g.expected for g in guards):
                    return None
                return [self.answer(op) for op in ops]
            case fx.Batch(ops=ops):
                return [self.answer(op) for op in ops]
        raise AssertionError(f"TinyStore cannot answer {e!r}")


    def _by_score(self, key, low, high):
        """The zset's (member, score) rows within the bounds, lowest score first."""
        rows = ((m, s) for m, s in self.data.get(key, {}).items() if _in_range(s, low, high))
        return sorted(rows, key=lambda row: (row[1], row[0]))


def drive(gen, store, reply=None, limit=500):
    """Answer every effect from ``store`` until ``gen`` returns; -> (effects, return value).
    ``reply`` is sent first, to answer an effect the test took with ``step``."""
    effects = []
    for _ in range(limit):
        try:
            effect = gen.send(reply)
        except StopIteration as stop:
            return effects, stop.value
        effects.append(effect)
        reply = store.answer(effect)
    raise AssertionError(f"still running after {limit} effects")
