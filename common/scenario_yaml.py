"""Scenario YAML, bounded: a document is refused before it can cost much.

A scenario file is small; a hostile or broken one must not take gigabytes or minutes
(an alias bomb, deep nesting, a million values, an integer of thousands of digits), nor
block (a FIFO). ``load_yaml`` parses with PyYAML's safe loader under these bounds;
``file_problem`` judges a path from its ``os.stat`` before anyone opens it (the callers
in sim/ and real/ do the I/O). Every error is one line (``one_line``).
"""

from __future__ import annotations

import stat

import yaml

#: Scenario files are a few KiB; PyYAML (pure Python) scans ~1 MB/s on a busy 2-core
#: machine, so 256 KiB is refused or read in a fraction of a second.
MAX_SCENARIO_BYTES = 256 << 10
#: The schema nests 5 levels deep; PyYAML's recursive composer dies near 490.
MAX_YAML_DEPTH = 32
#: Values in the document with every alias expanded: a 445-byte alias bomb expands
#: to billions. The shipped scenarios have ~150; PyYAML composes ~12,000 a second on a
#: busy 2-core machine, so 2,000 (200 projects with their quotas) takes ~0.15 s.
MAX_YAML_NODES = 2_000
#: The largest number any field takes (a 64-bit seed) has 20 digits.
MAX_INTEGER_DIGITS = 30

class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with the document bounded before anything is built from it:
    nesting depth, nodes counted with every alias expanded (an alias bomb of a few
    hundred bytes expands to billions), and the digits of an integer (Python refuses
    int() past 4,300 digits with a ValueError of its own)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent, index):
        self._depth += 1
        self._nodes += 1  # counted as they come: a long flat file stops here, not at the end
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", self.peek_event().start_mark)
            if self._nodes > MAX_YAML_NODES:
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_YAML_NODES:,} values", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def fetch_flow_collection_start(self, TokenClass):
        # The scanner's own bound on [ and { nesting: it tracks every open bracket as a
        # possible key, which costs quadratic time long before the composer's bound.
        if self.flow_level >= MAX_YAML_DEPTH:
            raise yaml.scanner.ScannerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def compose_document(self):
        node = super().compose_document()
        _check_expanded_size(node)
        return node

    def construct_yaml_int(self, node):
        if len(node.value) > MAX_INTEGER_DIGITS:
            raise yaml.constructor.ConstructorError(
                None, None, f"an integer of more than {MAX_INTEGER_DIGITS} digits", node.start_mark)
        return super().construct_yaml_int(node)


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def _check_expanded_size(root) -> None:
    """Refuse a document whose nodes, counted with aliases expanded, pass MAX_YAML_NODES.
    Sizes are memoised per node, so the count costs one visit per distinct node."""
    sizes: dict[int, int] = {}
    # Post-order without recursion (depth is bounded, but this is as cheap).
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[id(node)] = 1
            continue
        children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else node.value
        if not children_done:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        size = 1 + sum(sizes.get(id(c), 1) for c in children)
        if size > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"more than {MAX_YAML_NODES:,} values once aliases are expanded", node.start_mark)
        sizes[id(node)] = size


def load_yaml(raw: bytes | str):
    """One YAML document as Python values, bounded (``_BoundedLoader`` and
    MAX_SCENARIO_BYTES); raises yaml.YAMLError."""
    if len(raw) > MAX_SCENARIO_BYTES:
        raise yaml.composer.ComposerError(problem=f"the document is larger than {MAX_SCENARIO_BYTES:,} bytes")
    return yaml.load(raw, Loader=_BoundedLoader)  # a SafeLoader subclass: safe


def yaml_problem(e: yaml.YAMLError) -> str:
    """``line 3, column 5: not valid YAML (...)``: one line."""
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = getattr(e, "problem", None) or str(e)
    return f"{where}not valid YAML ({one_line(problem)})"


def one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line (control characters escaped) and at most ``limit`` characters:
    every error is one line, whatever the file held."""
    flat = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def file_problem(mode: int, size: int) -> str | None:
    """Why a path with this ``os.stat`` mode and size cannot be a scenario file, or None.
    Checked before opening: opening a FIFO would block until a writer comes."""
    if stat.S_ISDIR(mode):
        return "is a directory, expected a YAML file"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a FIFO, socket or device), expected a YAML file"
    if size > MAX_SCENARIO_BYTES:
        return f"is {size:,} bytes; scenario files are at most {MAX_SCENARIO_BYTES:,}"
    return None
