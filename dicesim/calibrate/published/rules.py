"""Which figures a split fits on, which it may hold out, and which it must leave out.

The rules, from the set's own metadata (:mod:`.schema`), for any ``--fit-on`` selection:

1. a statement (``evidence = "statement"``) is never fitted and never enters an error statistic;
   one statement is one figure, whatever the number of places that repeat it; a second reading
   of one measurement (``dup_of``) is never fitted or counted either;
2. a figure whose ``role`` is ``exclude`` is fitted only if selected; otherwise it is held out
   like any other measurement when the rules below allow it (its role records why the built-in
   split leaves it out);
3. a held-out figure is never from a fitted run (same ``group``: the next row or column of the
   same benchmark run), nor from a run that neighbours a fitted run in a published table (same
   ``table``, ``row`` one apart): such figures are *excluded*, with the reason;
4. a fitted parameter rests on at least two independence units (the ``group`` prefix: a source or
   a machine); :mod:`.fit` counts them from the fit's own sensitivities.

The built-in split (``role == "fit"``) must reproduce the file's roles exactly: the figures it
excludes are those marked ``exclude`` (tests/test_published_rules.py checks it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from dicesim.calibrate.published.schema import DEFAULT_FIT_ON, FIELDS, Figure
from dicesim.calibrate.select import compile_selector
from dicesim.errors import ConfigError


@dataclass(frozen=True)
class Split:
    """A fitted/held-out split of the set; ``excluded`` maps a figure id to why it is left out."""

    fit_on: str
    fit: tuple[Figure, ...]
    held_out: tuple[Figure, ...]
    excluded: dict[str, str] = field(default_factory=dict)
    statements: tuple[Figure, ...] = ()

    def split_of(self, fig: Figure) -> str:
        """``fit``, ``held-out``, ``excluded`` or ``statement``."""
        if fig in self.fit:
            return "fit"
        if fig in self.held_out:
            return "held-out"
        return "statement" if fig in self.statements else "excluded"


def neighbour_reason(fig: Figure, fitted: Sequence[Figure]) -> str:
    """Why ``fig`` may not be held out next to the ``fitted`` figures, or '' when it may."""
    for f in fitted:
        if f.group == fig.group:
            return f"same run as the fitted {f.id}"
    for f in fitted:
        if fig.table and f.table == fig.table and abs((f.row or 0) - (fig.row or 0)) == 1:
            return f"neighbouring row/column of the fitted {f.id} in table {fig.table}"
    return ""


def split_figures(figs: Sequence[Figure], fit_on: str = DEFAULT_FIT_ON) -> Split:
    """The split a ``--fit-on`` expression over :data:`FIELDS` selects, with rules 1-3 applied."""
    pred = compile_selector(fit_on, FIELDS)
    statements = tuple(f for f in figs if f.evidence == "statement")
    ids = {f.id for f in figs}
    missing = sorted(f"{f.id} -> {f.dup_of}" for f in figs if f.dup_of and f.dup_of not in ids)
    if missing:
        raise ConfigError("dup_of", f"names no figure of the set: {', '.join(missing)}")
    fit = tuple(f for f in figs if f.evidence == "measurement" and not f.dup_of and pred(f.fields()))
    if not fit:
        raise ConfigError("fit-on", f"{fit_on!r} selects no published measurement")
    held, excluded = [], {}
    for f in figs:
        if f in fit or f.evidence == "statement":
            continue
        reason = f"a second reading of {f.dup_of}: counts once" if f.dup_of else neighbour_reason(f, fit)
        if reason:
            excluded[f.id] = reason
        else:
            held.append(f)
    if not held:
        raise ConfigError("fit-on", f"{fit_on!r} selects every published figure; nothing is left to predict")
    return Split(fit_on=fit_on, fit=fit, held_out=tuple(held), excluded=excluded, statements=statements)


def role_problems(figs: Sequence[Figure]) -> list[str]:
    """Where the files' roles disagree with the rules under the built-in split (empty: none)."""
    split = split_figures(figs, DEFAULT_FIT_ON)
    out = []
    for f in figs:
        derived = split.split_of(f)
        expected = {"fit": "fit", "check": "held-out", "exclude": "excluded", "statement": "statement"}[f.role]
        if derived != expected:
            why = split.excluded.get(f.id, "")
            out.append(f"{f.id}: role {f.role!r} but the rules make it {derived}" + (f" ({why})" if why else ""))
    groups: dict[str, set[str]] = {}
    for f in figs:
        if f.role in ("fit", "check"):
            groups.setdefault(f.group, set()).add(f.role)
    out += [f"group {g} holds both fitted and held-out figures" for g, roles in groups.items() if len(roles) > 1]
    return out
