"""Errors a user can act on.  The CLI prints them as one line (no traceback unless ``--debug``)."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class ThkitError(Exception):
    """Base class of every error thkit raises on purpose, with a message meant for the user."""


class RecipeError(ThkitError):
    """A recipe (or a ``--cfg-options`` override) asks for something that cannot be built.

    ``path`` is the dotted location inside the recipe, e.g. ``model.motion.num_kp``.
    """

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class InterfaceError(ThkitError):
    """A registered part does not satisfy the interface of its kind (missing method, attribute or output)."""


class CheckpointError(ThkitError):
    """A checkpoint cannot be read or does not match the model (names the offending keys)."""


class ExportError(ThkitError):
    """A model cannot be exported, or an export cannot be read or run (:mod:`thkit.export`, :mod:`thkit.nnpack`)."""


def closest(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Registered names closest to ``name`` (case-insensitive, difflib ratio), best first."""
    cands = list(candidates)
    lower = {c.lower(): c for c in cands}
    hits = difflib.get_close_matches(name.lower(), list(lower), n=n, cutoff=0.4)
    if hits:  # a clear best match ('FirstOrderMotoin') hides the far ones that merely pass the cutoff
        ratio = lambda h: difflib.SequenceMatcher(None, name.lower(), h).ratio()  # noqa: E731
        best = ratio(hits[0])
        hits = [h for h in hits if ratio(h) >= 0.8 * best]
    # substring matches are useful too ('Warper' -> 'GridSampleWarper')
    for c in cands:
        if len(hits) >= n:
            break
        if name.lower() in c.lower() and c.lower() not in hits:
            hits.append(c.lower())
    return [lower[h] for h in hits]


def suggest(name: str, candidates: Iterable[str]) -> str:
    """A 'did you mean' sentence listing the closest candidates (or all of them when few)."""
    cands = sorted(candidates)
    near = closest(name, cands)
    if near:
        return "did you mean " + ", ".join(repr(c) for c in near) + "?"
    if not cands:
        return "nothing of this kind is registered"
    shown = ", ".join(cands[:12]) + (" ..." if len(cands) > 12 else "")
    return f"registered: {shown}"
