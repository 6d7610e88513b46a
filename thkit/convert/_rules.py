"""The rule engine shared by the official-checkpoint converters (``fomm``, ``tpsmm``, ``smac``).

A converter describes each official network by a :class:`NetRules`: a table of :class:`Rule` objects (official
module regex -> thkit module template, the tensors a module of that type owns, required or not, the indexed
family it belongs to) plus a few whole-network checks.  :func:`convert_net` applies it to one state dict and
:func:`convert_networks` to a whole official checkpoint ``{net_name: state_dict, ...}``, merging the networks
into ``{'model': sd, ...}``.  The mapping is total in both directions; every problem is collected and raised
as one :class:`~thkit.errors.CheckpointError` naming the offending keys:

* *unknown keys*: an official key that no rule matches, or a tensor a module of its type does not own;
* *missing keys*: a tensor a module of its type owns but lacks, a required rule that matched nothing, a
  required module (prefix) that is absent, a gap in an indexed family (``down_blocks.0..n-1``), a module of a
  ``{sub: tensors}`` rule whose sibling sub-modules are absent (a block with a ``conv`` but no ``norm``),
  families whose lengths disagree, and whatever the network's own ``checks`` report.

Rule patterns match the official *module path* (the key without its last component, the tensor name).  A
pattern with explicit ``(?P<mod>...)`` and ``(?P<leaf>...)`` groups matches the full key instead, for modules
whose tensors live deeper (``encode_enc.norm1.weight``) or for bare parameters (empty leaf).  Several rules may
match keys of the same module path (their tensors are merged; the first rule decides the target).  Named groups
fill the target template; ``i`` is the index of a ``family``, ``sub`` selects the tensor set of a dict-valued
``owned``, and ``s`` is a size that is replaced by its rank ``j`` (coarse to fine) within a ``size_family``.
"""
from __future__ import annotations

import functools
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from thkit.errors import CheckpointError

Tensor = torch.Tensor

# tensor sets owned by each module type
CONV = ("weight", "bias")
CONV_NOBIAS = ("weight",)
LINEAR = ("weight", "bias")
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
AFFINE = ("weight", "bias")  # InstanceNorm2d(affine=True): no running statistics
SN_CONV = ("weight_orig", "weight_u", "weight_v", "bias")  # spectral-normalised conv
KERNEL = ("weight",)  # anti-alias Gaussian kernel buffer

#: what a module owns: one tensor-name set, a list of alternative sets (plain vs spectral-norm conv), or a dict
#: choosing one of those by the rule's ``sub`` group
Owned = Any


class Rule(NamedTuple):
    """One official module type: ``pattern`` (regex) -> ``target`` (thkit template), see the module docstring."""

    pattern: str
    target: str
    owned: Owned
    required: bool = False  # at least one module must match
    family: str | None = None  # template of an indexed group (``{i}``) whose indices must run 0..n-1
    size_family: str | None = None  # modules named by a size ``{s}``: the target gets its rank ``{j}``


@dataclass
class Module:
    """An official module found in a state dict: the rules that matched its keys, the first one's groups."""

    path: str
    rules: set[int]
    groups: dict[str, str]
    sub_span: tuple[int, int] | None
    tensors: dict[str, Tensor] = field(default_factory=dict)

    @property
    def rule(self) -> int:
        return min(self.rules)


@dataclass
class Found:
    """What :func:`convert_net` found in one network, handed to the network's own ``checks``."""

    modules: dict[str, Module]
    families: dict[str, set[int]]
    sizes: dict[str, set[int]]


@dataclass(frozen=True)
class NetRules:
    """How to convert one official network."""

    rules: Sequence[Rule]
    #: official module prefixes that must be present (reported as ``net.prefix.*``)
    required_modules: Sequence[str] = ()
    #: ``(family a, family b, factor)``: family b must have ``factor`` times as many blocks as family a
    same_length: Sequence[tuple[str, str, int]] = ()
    #: method-specific completeness checks ``(net, found) -> missing entries``
    checks: Sequence[Callable[[str, Found], list[str]]] = ()
    #: per-tensor rewrite ``(rule, leaf, tensor) -> (leaf, tensor)`` applied to the output
    adapt: Callable[[Rule, str, Tensor], tuple[str, Tensor]] | None = None


@functools.cache
def _compile(pattern: str) -> re.Pattern:
    if "(?P<mod>" in pattern:
        return re.compile(pattern + "$")
    return re.compile(rf"(?P<mod>{pattern})\.(?P<leaf>[^.]+)$")


def _close(pattern: str, start: int) -> int:
    """Index of the parenthesis closing the one at ``start``."""
    depth, i = 0, start
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        depth += (c == "(") - (c == ")")
        if depth == 0:
            return i
        i += 1
    raise ValueError(f"unbalanced pattern {pattern!r}")


def describe(pattern: str) -> str:
    """A readable module path for a rule pattern, for messages: named groups become ``{name}``."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i + 1])
            i += 2
        elif c == "(":
            j = _close(pattern, i)
            head = re.match(r"\(\?P<(\w+)>", pattern[i:])
            optional = pattern[j + 1:j + 2] == "?"
            if head and head[1] == "mod":
                return describe(pattern[i + head.end():j])
            if head and head[1] != "leaf":
                out.append("{" + head[1] + "}")
            elif not head and not optional:
                out.append(describe(pattern[i + 1:j]))
            i = j + 1 + optional
        else:
            out.append(c)
            i += 1
    return "".join(out).rstrip(".")


def _alternatives(owned: Owned, groups: Mapping[str, str]) -> list[frozenset[str]]:
    if isinstance(owned, Mapping):
        return _alternatives(owned[groups["sub"]], groups)
    if isinstance(owned, list):
        return [frozenset(a) for a in owned]
    return [frozenset(owned)]


def _name(net: str, mod: str, leaf: str) -> str:
    return f"{net}.{mod}.{leaf}" if leaf else f"{net}.{mod}"


def _match(net: str, sd: Mapping[str, Tensor], rules: Sequence[Rule]) -> tuple[dict[str, Module], list[str]]:
    """Assign every key to the first rule matching it; keys of one module path are gathered in one Module."""
    compiled = [_compile(r.pattern) for r in rules]
    modules: dict[str, Module] = {}
    unknown: list[str] = []
    for key, tensor in sd.items():
        key = str(key)
        for r, rx in enumerate(compiled):
            m = rx.match(key)
            if m:
                groups = {k: v for k, v in m.groupdict().items() if k not in ("mod", "leaf")}
                span = m.span("sub") if m.groupdict().get("sub") is not None else None
                mod = modules.setdefault(m["mod"], Module(m["mod"], set(), groups, span))
                mod.rules.add(r)
                mod.tensors[m["leaf"]] = tensor
                break
        else:
            unknown.append(f"{net}.{key}")
    return modules, unknown


def convert_net(method: str, net: str, sd: Mapping[str, Tensor], spec: NetRules) -> dict[str, Tensor]:
    """Map one official network's state dict by ``spec``; raise CheckpointError naming every problem."""
    rules = spec.rules
    modules, unknown = _match(net, sd, rules)
    missing: list[str] = []
    families: dict[str, set[int]] = defaultdict(set)
    sizes: dict[str, set[int]] = defaultdict(set)
    subs: dict[tuple[int, str, str], set[str]] = defaultdict(set)  # (rule, before sub, after sub) -> subs
    for path, mod in modules.items():
        rule = rules[mod.rule]
        present = set(mod.tensors)
        alts = _alternatives(rule.owned, mod.groups)
        if present not in alts:
            best = min(alts, key=lambda a: (not present <= a, len(a ^ present)))
            unknown += [_name(net, path, leaf) for leaf in sorted(present - best)]
            missing += [_name(net, path, leaf) for leaf in sorted(best - present)]
        if rule.family is not None:
            families[rule.family.format(**mod.groups)].add(int(mod.groups["i"]))
        for r in mod.rules:
            if rules[r].size_family is not None:
                sizes[rules[r].size_family].add(int(mod.groups["s"]))
        if isinstance(rule.owned, Mapping) and mod.sub_span is not None:
            a, b = mod.sub_span
            subs[(mod.rule, path[:a], path[b:])].add(path[a:b])
    for (r, before, after), have in subs.items():  # a block with a conv but no norm, or vice versa
        missing += [f"{net}.{before}{s}{after}.*" for s in rules[r].owned if s not in have]
    seen = set().union(*(m.rules for m in modules.values()))
    missing += [f"{net}.{describe(rule.pattern)}.*" for r, rule in enumerate(rules) if rule.required and r not in seen]
    missing += [f"{net}.{p}.*" for p in spec.required_modules
                if not any(m == p or m.startswith(p + ".") for m in modules)]
    for fam, idx in families.items():
        missing += [f"{net}.{fam}.{i}.*" for i in sorted(set(range(max(idx) + 1)) - idx)]
    for a, b, factor in spec.same_length:
        na, nb = len(families.get(a, ())), len(families.get(b, ()))
        if nb != factor * na:
            missing.append(f"{net}: {b} has {nb} blocks but {a} has {na} (expected {factor * na})")
    found = Found(modules, families, sizes)
    for check in spec.checks:
        missing += check(net, found)
    for kind, names in (("unknown", unknown), ("missing", missing)):
        if names:
            raise CheckpointError(f"{method} converter: {kind} keys in official checkpoint: "
                                  f"{', '.join(sorted(set(names)))}")

    rank = {fam: {s: j for j, s in enumerate(sorted(v))} for fam, v in sizes.items()}
    out: dict[str, Tensor] = {}
    for mod in modules.values():
        rule = rules[mod.rule]
        groups: dict[str, Any] = dict(mod.groups)
        if rule.size_family is not None:
            groups["j"] = rank[rule.size_family][int(groups["s"])]
        target = rule.target.format(**groups)
        for leaf, tensor in mod.tensors.items():
            if spec.adapt is not None:
                leaf, tensor = spec.adapt(rule, leaf, tensor)
            out[f"{target}.{leaf}" if leaf else target] = tensor
    return out


def merge(method: str, result: dict[str, dict[str, Tensor]], dest: str, converted: Mapping[str, Tensor]) -> None:
    """Add one network's converted weights to ``result[dest]``; a key filled twice is an error."""
    bucket = result.setdefault(dest, {})
    clash = sorted(set(bucket) & set(converted))
    if clash:
        raise CheckpointError(f"{method} converter: keys filled twice: {', '.join(clash)}")
    bucket.update(converted)


def convert_networks(method: str, official: Any, nets: Mapping[str, tuple[str, NetRules]], *,
                     required: Sequence[str], ignored: Sequence[str] = (),
                     source: str | None = "official checkpoint", hint: str = "") -> dict[str, dict[str, Tensor]]:
    """Convert a whole official checkpoint ``{net: state_dict, ...}`` into ``{dest: thkit state dict}``.

    ``nets`` maps each official network to its destination entry and rules, in conversion order; the
    ``required`` networks must be present (not None), ``ignored`` entries (optimiser state, epoch) are
    skipped, anything else is an error.  ``source`` names the input in messages, ``hint`` is appended to
    the missing-networks message.
    """
    if not isinstance(official, Mapping):
        raise CheckpointError(f"{method} converter: expected a checkpoint dict of networks ({', '.join(nets)}), "
                              f"got {type(official).__name__}")
    where = f" in {source}" if source else ""
    absent = [n for n in required if official.get(n) is None]
    if absent:
        raise CheckpointError(f"{method} converter: missing networks{where}: {', '.join(absent)} "
                              f"(has: {', '.join(map(str, official)) or 'nothing'}){hint}")
    unknown = [str(n) for n in official if n not in nets and n not in ignored]
    if unknown:
        expected = ", ".join(nets) + (f"; ignored: {', '.join(sorted(ignored))}" if ignored else "")
        raise CheckpointError(f"{method} converter: unknown entries{where}: {', '.join(unknown)} "
                              f"(expected {expected})")
    result: dict[str, dict[str, Tensor]] = {}
    for net, (dest, spec) in nets.items():
        sd = official.get(net)
        if sd is None:
            continue
        if not isinstance(sd, Mapping):
            raise CheckpointError(f"{method} converter: official '{net}' is not a state dict ({type(sd).__name__})")
        merge(method, result, dest, convert_net(method, net, sd, spec))
    return result


def match_score(official: Any, nets: Mapping[str, tuple[str, NetRules]], *, required: Sequence[str],
                ignored: Sequence[str] = ()) -> tuple[float, str]:
    """How well a loaded checkpoint fits a converter's tables, without converting it: ``(score, why)``.

    0 when it is not a dict or lacks a required network; otherwise the share of its keys (network entries, and
    the keys inside each known network) that the rules map.  1.0 means every key has a rule.
    """
    if not isinstance(official, Mapping):
        return 0.0, f"not a checkpoint dict ({type(official).__name__})"
    absent = [n for n in required if not isinstance(official.get(n), Mapping)]
    if absent:
        return 0.0, f"no {', '.join(absent)}"
    total = mapped = 0
    unknown: list[str] = []
    for name, sd in official.items():
        if name in ignored:
            continue
        if name not in nets or not isinstance(sd, Mapping):
            total += 1
            unknown.append(str(name))
            continue
        _, bad = _match(name, sd, nets[name][1].rules)
        total += len(sd)
        mapped += len(sd) - len(bad)
        unknown += bad
    score = mapped / total if total else 0.0
    why = "every key has a rule" if not unknown else (
        f"{len(unknown)} of {total} keys have no rule (e.g. {', '.join(unknown[:3])})")
    return score, why
