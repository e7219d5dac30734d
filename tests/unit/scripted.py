"""Drive an effect generator by hand: send each reply in, get the next effect out."""


def step(gen, value=None):
    """Send ``value`` in (None to start) and return the next effect the workflow yields."""
    return gen.send(value)


def throw(gen, exc):
    """Raise ``exc`` at the pending ``yield`` and return the next effect."""
    return gen.throw(exc)


def finish(gen, value=None):
    """Send ``value`` in and return what the workflow returns; fail if it yields again."""
    try:
        effect = gen.send(value)
    except StopIteration as stop:
        return stop.value
    raise AssertionError(f"expected the workflow to return, it yielded {effect!r}")


def run(gen, *replies):
    """Start ``gen`` and feed it ``replies`` in order (an exception is thrown in) until it
    returns; -> (every effect it yielded, its return value)."""
    effects = [gen.send(None)]
    for k, reply in enumerate(replies):
        try:
            effects.append(gen.throw(reply) if isinstance(reply, BaseException) else gen.send(reply))
        except StopIteration as stop:
            assert k == len(replies) - 1, f"returned after {k + 1} of {len(replies)} replies"
            return effects, stop.value
    raise AssertionError(f"still running after {len(replies)} replies: {effects[-1]!r}")
