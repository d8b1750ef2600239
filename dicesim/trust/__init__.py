"""How far to trust a prediction: its error band, the assumptions it rests on, what the run did,
and whether its answer survives the parameters nobody measured (docs/trust.md).

- :mod:`~dicesim.trust.provenance`: measured, fitted, cited or assumed, for each kind of number;
- :mod:`~dicesim.trust.facts`: where each exchanging group lives, which links it crosses, what-ifs;
- :mod:`~dicesim.trust.assess`: one run's band (from :mod:`dicesim.evidence`) and assumptions;
- :mod:`~dicesim.trust.verdict`: the fastest strategy and whether the bands resolve the order;
- :mod:`~dicesim.trust.sensitivity`: the unmeasured parameters on the bottleneck varied, flips named.
"""

from dicesim.trust.assess import Assessment, assess_run, bottleneck_classes, bottleneck_links
from dicesim.trust.facts import RunFacts, run_facts, what_if_changes, what_if_note
from dicesim.trust.provenance import profile_basis
from dicesim.trust.sensitivity import Knob, Sensitivity, knobs_for, sensitivity
from dicesim.trust.verdict import Verdict, band_text, order_verdict

__all__ = [
    "Assessment", "Knob", "RunFacts", "Sensitivity", "Verdict", "assess_run", "band_text", "bottleneck_classes",
    "bottleneck_links",
    "knobs_for", "order_verdict", "profile_basis", "run_facts", "sensitivity", "what_if_changes", "what_if_note",
]
