"""How far to trust a prediction: error bands from the accuracy file, assumptions with their status,
what the run does, what-ifs, and sensitivity flips (dicesim/evidence.py, dicesim/trust/)."""

from __future__ import annotations

import json
import math

import pytest

from dicesim.cli import main
from dicesim.evidence import ErrorStats, Evidence, Level, band_for, load_evidence, make_level, record_level
from dicesim.scenario import make_scenario
from dicesim.sim.api import simulate
from dicesim.sim.costs.profile import get_profile
from dicesim.topology import derive_topology, get_topology
from dicesim.trust import assess_run, order_verdict, run_facts, what_if_changes, what_if_note
from dicesim.trust.provenance import profile_basis
from dicesim.trust.sensitivity import Knob, knobs_for, sensitivity

SIM = ["simulate", "--model", "XL/2", "--topology", "8x-rtx4090-pcie", "--batch", "8", "--steps", "6",
       "--strategy", "dice", "--json"]


def _comm_only():
    """The built-in evidence without its step level: the communication-only band of the collectives."""
    return load_evidence().model_copy(update={"step": None})


def _level(**families: float) -> Level:
    return Level(held_out=9, median_abs_err=0.1, max_abs_err=0.3, command="test", date="2026-01-01",
                 families={f: ErrorStats(held_out=3, median_abs_err=e / 2, max_abs_err=e) for f, e in families.items()})


def test_json_result_carries_the_band_assumptions_and_facts(capsys):
    assert main(SIM) == 0
    doc = json.loads(capsys.readouterr().out)
    band, step = doc["error_band"], doc["step_latency_s"]
    ev = load_evidence()
    measured_step = ev.step is not None and "consumer-pcie" in ev.step.families
    assert band["covers"] == ("step" if measured_step else "communication") and band["family"] == "consumer-pcie"
    if measured_step:  # the whole-step band is the family's largest held-out step error, read from the file
        assert band["step_max_err"] == pytest.approx(ev.step.families["consumer-pcie"].max_abs_err)
    assert band["low_s"] < step < band["high_s"]
    assert band["compute_basis"] == "datasheet" and band["profile"] == "rtx4090"
    assert ("whole-step error is unmeasured" in band["statement"]) != measured_step
    # the band's width is the built-in file's consumer-pcie error, not a number typed into code
    e = load_evidence().collective.families["consumer-pcie"].max_abs_err
    assert band["comm_max_err"] == pytest.approx(e)
    statuses = {a["parameter"]: a["status"] for a in doc["assumptions"]}
    assert statuses["upi link bandwidth"] == "assumed" and statuses["pcie4 link bandwidth"] == "cited"
    assert statuses["NCCL efficiency on shm"] == "fitted"
    assert any(a["on_bottleneck"] for a in doc["assumptions"])
    assert any("the network carries no expert traffic" in s for s in doc["extra"]["run_facts"])


def test_band_arithmetic_for_each_level_of_evidence():
    common = dict(step_s=1.0, comm_busy_step_s=0.6, exposed_step_s=0.1, compute_basis="datasheet", profile="p")
    comm = band_for(families=("nvswitch",), evidence=Evidence(collective=_level(nvswitch=0.25)), **common)
    # up by e x communication in flight, down by at most the exposed part
    assert (comm.low_s, comm.high_s, comm.covers) == (pytest.approx(0.9), pytest.approx(1.15), "communication")
    step = band_for(families=("nvswitch",), evidence=Evidence(collective=_level(nvswitch=0.25),
                                                                step=_level(nvswitch=0.4)), **common)
    assert (step.low_s, step.high_s, step.covers) == (pytest.approx(0.6), pytest.approx(1.4), "step")
    none = band_for(families=("nvswitch",), evidence=Evidence(collective=_level(infiniband=0.1)), **common)
    assert (none.low_s, none.high_s, none.covers) == (1.0, 1.0, "none") and "no band" in none.statement
    # several families: the largest error counts; an unmeasured family borrows a named stand-in
    two = band_for(families=("infiniband", "nvswitch"), evidence=Evidence(collective=_level(nvswitch=0.05,
                                                                                           infiniband=0.2)), **common)
    assert two.comm_max_err == 0.2 and two.family == "infiniband"
    roce = band_for(families=("roce",), evidence=Evidence(collective=_level(infiniband=0.2)),
                    stand_in={"roce": "infiniband"}, **common)
    assert roce.comm_max_err == 0.2 and "infiniband figures stand in" in roce.statement
    cpu = band_for(families=(), evidence=Evidence(cpu=_level()), cpu=True, **common)
    assert cpu.covers == "step" and cpu.high_s == pytest.approx(1.3)


def test_a_rerun_of_the_accuracy_command_moves_the_band(tmp_path):
    """The band reads whatever the accuracy command recorded: doubling the family's error doubles the
    band's reach (the file is the only source of the figure)."""
    path = tmp_path / "accuracy.toml"
    record_level(path, "cpu", make_level({"held_out": 2, "median_abs_err": 0.01, "max_abs_err": 0.02}, {}, command="c"))
    record_level(path, "collective", make_level({"held_out": 3, "median_abs_err": 0.1, "max_abs_err": 0.1},
                                                {"consumer-pcie": {"held_out": 3, "median_abs_err": 0.1,
                                                                   "max_abs_err": 0.1}}, command="x"))
    assert load_evidence(path).cpu.max_abs_err == 0.02  # one level's rewrite keeps the others
    assert load_evidence(path).step == load_evidence().step  # levels the file lacks stay the built-in ones
    sc = make_scenario(model="XL/2", batch=8, steps=6, strategy="dice")
    G = get_topology(sc.topology)
    profile = get_profile("rtx4090")
    r = simulate(sc, graph=G, profile=profile)
    no_step = {"step": None}  # the collective level's reach shows in the communication-only band
    one = assess_run(sc, G, profile, r.summary(), r.links, evidence=load_evidence(path).model_copy(update=no_step)).band
    record_level(path, "collective", make_level({"held_out": 3, "median_abs_err": 0.2, "max_abs_err": 0.2},
                                                {"consumer-pcie": {"held_out": 3, "median_abs_err": 0.2,
                                                                   "max_abs_err": 0.2}}, command="x"))
    two = assess_run(sc, G, profile, r.summary(), r.links, evidence=load_evidence(path).model_copy(update=no_step)).band
    step = r.summary()["step_latency_s"]
    assert two.high_s - step == pytest.approx(2 * (one.high_s - step))


def test_order_verdict_resolves_only_outside_the_bands():
    band = lambda lo, hi: band_for(step_s=(lo + hi) / 2, comm_busy_step_s=(hi - lo) / 2, exposed_step_s=1.0,  # noqa
                                    families=("x",), evidence=Evidence(collective=_level(x=1.0)),
                                    compute_basis="datasheet")
    apart = order_verdict([("a", 1.0, band(0.9, 1.1)), ("b", 2.0, band(1.8, 2.2))], baseline_s=3.0)
    assert apart.resolved and apart.fastest == "a" and "3.00x over sync" in apart.sentence
    close = order_verdict([("a", 1.0, band(0.9, 1.1)), ("b", 1.05, band(0.95, 1.15))])
    assert not close.resolved and close.contenders == ("b",) and "not resolved" in close.sentence
    tie = order_verdict([("a", 1.0, band(0.9, 1.1)), ("b", 1.0, band(0.9, 1.1)), ("c", 3.0, band(2.9, 3.1))])
    assert "b ties with it" in tie.sentence and tie.resolved


def test_sensitivity_search_finds_a_closed_form_flip():
    """Strategy b is 1.5/f against a's constant 1: the order flips at f = 1.5, which the bisection names
    to within its resolution (four halvings between grid points)."""
    sc = make_scenario(model="tiny", topology="tiny-ring4", world_size=4, steps=2)
    knob = Knob(key="link:generic", label="x", base=1.0, unit="", status="assumed", low=0.5, high=2.0)

    def evaluate(job):
        scen, G, _ = job
        f = G.edges["n0.gpu0", "n0.gpu1"]["bw_Bps"] / 100e9
        return 1.0 if scen.strategy.name == "sync" else 1.5 / f

    G = get_topology("tiny-ring4")
    res = sensitivity(sc, ["sync", "displaced"], {"sync": 1.0, "displaced": 1.5}, [knob], G, get_profile("h100-sxm"),
                      evaluate=evaluate)
    (flip,) = res.results[0].flips
    assert flip.winner == "displaced" and flip.factor == pytest.approx(1.5, rel=0.03)
    assert not res.robust and "displaced overtakes sync" in res.verdict()


def test_sensitivity_flip_on_the_l40s_box_is_where_the_simulator_flips():
    """The issue's first question: 8 L40S in the 8x-rtx4090-pcie layout with P2P, XL/2 at 512 px, batch 16.
    The cross-socket link is an assumption, and the order of dice and displaced turns on it: the flip
    lies inside x0.5..x2, and the named value is checked by simulating just below and just above it."""
    G = derive_topology(get_topology("8x-rtx4090-pcie"), name="my-box", gpu="l40s", p2p=True)
    profile = get_profile("l40s")
    sc = make_scenario(image_size=512, batch=16)
    names = ["displaced", "dice"]
    nominal = {n: simulate(sc.with_strategy(make_scenario(strategy=n).strategy), graph=G, profile=profile)
               .summary()["step_latency_s"] for n in names}
    r = simulate(sc.with_strategy(make_scenario(strategy="dice").strategy), graph=G, profile=profile)
    a = assess_run(sc, G, profile, r.summary(), r.links)
    assert a.bottleneck_classes == ("upi",)
    knobs = [k for k in knobs_for(a.assumptions, G, profile, _nccl(), load_evidence(), a.bottleneck)
             if k.key == "link:upi@upi"]
    assert knobs and knobs[0].status == "assumed" and (knobs[0].low, knobs[0].high) == (0.5, 2.0)
    res = sensitivity(sc, names, nominal, knobs, G, profile)
    assert res.nominal in names and not res.robust
    (flip,) = res.results[0].flips
    other = ({"dice", "displaced"} - {res.nominal}).pop()
    assert flip.winner == other and 0.5 < flip.factor < 2.0

    def winner(f):
        H, P = knobs[0].apply(G, profile, f)
        lat = {n: simulate(sc.with_strategy(make_scenario(strategy=n).strategy), graph=H, profile=P)
               .summary()["step_latency_s"] for n in names}
        return min(lat, key=lat.get)

    below, above = winner(flip.factor / 1.03), winner(flip.factor * 1.03)
    assert {below, above} == {"dice", "displaced"} and (below if flip.factor > 1 else above) == res.nominal


def _nccl():
    from dicesim.sim.network.nccl import builtin_nccl_model

    return builtin_nccl_model()


def test_compare_cli_sensitivity_json_on_a_robust_case(tmp_path, capsys):
    assert main(["compare", "--model", "XL/2", "--topology", "dgx-h100", "--batch", "8", "--steps", "6",
                 "--strategies", "sync,dice", "--sensitivity", "--traces", "none", "--out", str(tmp_path / "o"),
                 "--profile", "h100-sxm",  # the datasheet profile: its compute throughput is varied
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["sensitivity"]["robust"] and "robust" in doc["sensitivity"]["verdict"]
    assert doc["fastest"] == min(doc["strategies"], key=lambda r: r["step_latency_s"])["strategy"]
    assert {r["parameter"] for r in doc["sensitivity"]["rows"]} >= {"nvlink4 bandwidth", "compute throughput"}
    assert all(r["error_band"]["family"] == "nvswitch" for r in doc["strategies"])
    assert not list((tmp_path / "o").glob("*.trace.json*"))  # --traces none


def test_facts_say_where_groups_live_and_whether_the_network_carries_expert_traffic():
    inside = run_facts(make_scenario(topology="2x-dgx-h100-ib", world_size=16), get_topology("2x-dgx-h100-ib"))
    assert not inside.crosses_network and inside.group_servers == ((0,), (1,)) and inside.families == ("nvswitch",)
    assert any("--placement strided" in s for s in inside.sentences())
    spread = run_facts(make_scenario(topology="2x-dgx-h100-ib", world_size=16, placement="strided"),
                       get_topology("2x-dgx-h100-ib"))
    assert spread.crosses_network and spread.group_servers == ((0, 1), (0, 1))
    assert "infiniband" in spread.families and "consumer-pcie" not in spread.families  # the NIC hop is the network's
    roce = run_facts(make_scenario(topology="2x-hgx-h100-roce", world_size=16, placement="strided"),
                     get_topology("2x-hgx-h100-roce"))
    assert "roce" in roce.families


def test_what_if_that_changes_nothing_says_why():
    base = make_scenario(image_size=512, batch=16, strategy="sync")
    more = make_scenario(image_size=512, batch=16, strategy="sync", num_experts=16)
    G = get_topology(base.topology)
    changes = what_if_changes(base, more)
    assert changes == ["num_experts 8 -> 16"]
    a, b = (simulate(s).summary()["step_latency_s"] for s in (base, more))
    note = what_if_note(changes, run_facts(base, G), run_facts(more, G), a, b)
    assert "changed almost nothing" in note and "token copies each GPU sends per all-to-all" in note
    assert "2 experts instead of 1" in note
    moved = what_if_note(["placement contiguous -> strided"], run_facts(base, G), run_facts(base, G), 1.0, 1.5)
    assert "+50.00%" in moved


def test_profile_basis_reads_provenance():
    assert profile_basis(get_profile("l40s")) == "datasheet"
    assert profile_basis(get_profile("h100-calibrated")) == "measured"

    class Flagged:
        basis = "datasheet"
        fitted_range = "model=XL/2"

    assert profile_basis(Flagged()) == "datasheet"  # an explicit flag wins over the derivation


def test_every_cited_source_has_a_status():
    from dicesim.topology import hardware, host_staged

    for key in [*hardware.SOURCES, *host_staged.SOURCES]:
        assert hardware.SOURCE_STATUS.get(key) in ("measured", "fitted", "cited", "assumed"), key
    assert hardware.source_status("mine", "we measured 31 GB/s") == "measured"
    assert hardware.source_status("mine", "an assumption") == "assumed"


def test_band_is_never_wider_than_its_inputs_allow():
    r = simulate(make_scenario(model="XL/2", batch=8, steps=6, strategy="sync"))
    s = r.summary()
    sc = make_scenario(model="XL/2", batch=8, steps=6, strategy="sync")
    a = assess_run(sc, get_topology(sc.topology), get_profile("rtx4090"), s, r.links, evidence=_comm_only())
    step, e = s["step_latency_s"], a.band.comm_max_err
    assert a.band.high_s - step == pytest.approx(e * s["comm_busy_s"] / sc.steps)
    assert step - a.band.low_s <= s["exposed_comm_s"] / sc.steps + 1e-12
    assert math.isfinite(a.band.low_s) and a.band.low_s > 0


def _sequence_case(nvlink_scale: float):
    """dgx-h100 with its NVLink scaled: DistriFusion hides its K/V gathers behind compute and wins on full
    NVLink; at a tenth the flattened gathers no longer hide and sp's per-layer gathers win."""
    G = get_topology("dgx-h100").copy()
    for _, _, d in G.edges(data=True):
        if d.get("link") == "nvlink4":
            d["bw_Bps"] = float(d["bw_Bps"]) * nvlink_scale
    sc = make_scenario(model="XL/2", topology="dgx-h100", batch=4, steps=6, strategy="distrifusion")
    return G, get_profile("h100-sxm"), sc


def test_sequence_family_gets_a_band_assumptions_and_facts():
    G, profile, sc = _sequence_case(1.0)
    r = simulate(sc, graph=G, profile=profile)
    a = assess_run(sc, G, profile, r.summary(), r.links, evidence=_comm_only())
    assert a.band.covers == "communication" and a.band.family == "nvswitch"
    assert a.band.low_s < r.summary()["step_latency_s"] < a.band.high_s
    assert "K/V all-gathers are not in the published set" in a.band.statement  # what stands in is said
    assert a.facts.collective == "K/V all-gather" and not a.facts.replicated and a.facts.link_classes == ("nvlink4",)
    # K and V of this rank's slice (4 images x 2 (cfg) x 256/8 tokens x 1152 x 2 bytes), to 7 ranks around the ring
    assert a.facts.a2a_nbytes_per_rank == 2 * (4 * 8 * 2 * 32) * 1152 * 2 * 7
    assert any("K/V all-gathers cross nvlink4: the network carries no K/V traffic" in s for s in a.facts.sentences())
    assert any(x.parameter == "nvlink4 link bandwidth" and x.on_bottleneck for x in a.assumptions)


def test_sensitivity_flips_between_sp_and_distrifusion_where_the_simulator_does():
    G, profile, sc = _sequence_case(0.1)
    names = ["sp", "distrifusion"]

    def latencies(H, P):
        return {n: simulate(sc.with_strategy(make_scenario(strategy=n).strategy), graph=H, profile=P)
                .summary()["step_latency_s"] for n in names}

    nominal = latencies(G, profile)
    r = simulate(sc, graph=G, profile=profile)
    a = assess_run(sc, G, profile, r.summary(), r.links)
    knobs = [k for k in knobs_for(a.assumptions, G, profile, _nccl(), load_evidence(), a.bottleneck)
             if k.key.startswith("link:nvlink4")]
    assert knobs and (knobs[0].low, knobs[0].high) == (0.5, 2.0)
    res = sensitivity(sc, names, nominal, knobs, G, profile)
    assert not res.robust
    (flip,) = res.results[0].flips
    other = ({"sp", "distrifusion"} - {res.nominal}).pop()
    assert flip.winner == other and 0.5 < flip.factor < 2.0

    def winner(f):
        lat = latencies(*knobs[0].apply(G, profile, f))
        return min(lat, key=lat.get)

    assert {winner(flip.factor / 1.05), winner(flip.factor * 1.05)} == {"sp", "distrifusion"}
    assert winner(2.0) == "distrifusion"  # more bandwidth: the overlapped gathers win


def test_sequence_group_spans_servers_and_placement_changes_nothing_for_it():
    G = get_topology("2x-dgx-h100-ib")
    base = make_scenario(topology="2x-dgx-h100-ib", world_size=16, strategy="sp")
    strided = make_scenario(topology="2x-dgx-h100-ib", world_size=16, strategy="sp", placement="strided")
    f = run_facts(base, G)
    assert f.groups == (tuple(range(16)),) and f.group_servers == ((0, 1),) and f.crosses_network
    assert "infiniband" in f.families and "the network carries K/V traffic" in " ".join(f.sentences())
    note = what_if_note(what_if_changes(base, strided), f, run_facts(strided, G), 1.0, 1.0)
    assert "changed almost nothing" in note and "sequence parallelism gathers over all GPUs" in note


def test_accuracy_published_writes_both_levels_and_a_step_level_gives_a_whole_step_band(tmp_path):
    """The step level, once `dicesim accuracy --published` predicts it, lands in the accuracy file under the
    band's family names, and a run on that family then gets a whole-step band."""
    from types import SimpleNamespace

    from dicesim.calibrate.published.levels import COLLECTIVE_TARGET, STEP_TARGET, LevelSummary
    from dicesim.cli.published_cmd import record_published_levels

    def summary(level, target, fams):
        return LevelSummary(level=level, target=target, figures=sum(v["figures"] for v in fams.values()), runs=3,
                            sources=2, median_abs=0.1, max_abs=max(v["max_abs"] for v in fams.values()),
                            per_family=fams)

    coll = summary("collective", COLLECTIVE_TARGET, {"consumer-pcie": {"figures": 4, "median_abs": 0.1,
                                                                       "max_abs": 0.2}})
    step = summary("step", STEP_TARGET, {"pcie": {"figures": 5, "median_abs": 0.12, "max_abs": 0.3},
                                         "none": {"figures": 2, "median_abs": 0.05, "max_abs": 0.06}})
    path = tmp_path / "acc.toml"
    record_published_levels(SimpleNamespace(collective=SimpleNamespace(summary=coll), step=step), path, "cmd")
    ev = load_evidence(path)
    assert ev.step.families.keys() == {"consumer-pcie"} and ev.step.held_out == 7
    assert ev.collective.families["consumer-pcie"].max_abs_err == 0.2
    band = band_for(step_s=1.0, comm_busy_step_s=0.5, exposed_step_s=0.2, families=("consumer-pcie",), evidence=ev,
                    compute_basis="datasheet")
    assert band.covers == "step" and band.low_s == pytest.approx(0.7) and band.high_s == pytest.approx(1.3)


def test_a_run_without_collectives_has_a_point_band_that_still_orders():
    ev = Evidence(collective=_level(**{"consumer-pcie": 0.3}))
    dp = band_for(step_s=0.4, comm_busy_step_s=0.0, exposed_step_s=0.0, families=(), evidence=ev,
                  compute_basis="datasheet", profile="l40s")
    assert (dp.low_s, dp.high_s, dp.covers) == (0.4, 0.4, "communication")
    assert "none to be wrong about" in dp.statement and "whole-step error is unmeasured" in dp.statement
    ep = band_for(step_s=0.8, comm_busy_step_s=0.5, exposed_step_s=0.3, families=("consumer-pcie",), evidence=ev,
                  compute_basis="datasheet", profile="l40s")
    v = order_verdict([("data_parallel", 0.4, dp), ("displaced", 0.8, ep)])
    assert v.fastest == "data_parallel" and v.resolved  # 0.4 against 0.65-0.95: the bands do not overlap


def test_a_run_without_collectives_takes_its_machines_whole_step_band():
    sc = make_scenario(model="XL/2", topology="dgx-h100", batch=4, steps=4, strategy="data_parallel")
    G, profile = get_topology("dgx-h100"), get_profile("h100-sxm")
    r = simulate(sc, graph=G, profile=profile)
    ev = Evidence(step=_level(nvswitch=0.2), collective=_level(nvswitch=0.1))
    a = assess_run(sc, G, profile, r.summary(), r.links, evidence=ev)
    step = r.summary()["step_latency_s"]
    assert a.facts.families == () and a.band.covers == "step" and a.band.family == "nvswitch"
    assert (a.band.low_s, a.band.high_s) == (pytest.approx(0.8 * step), pytest.approx(1.2 * step))
    b = assess_run(sc, G, profile, r.summary(), r.links, evidence=Evidence(collective=_level(nvswitch=0.1))).band
    assert (b.low_s, b.high_s, b.covers) == (step, step, "communication") and "none to be wrong about" in b.statement
