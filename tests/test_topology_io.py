"""GraphML and TOML: exact round trips, atomic writes, one-line errors naming the file."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import pytest

from dicesim.errors import TopologyError
from dicesim.topology import (
    TOPOLOGY_NAMES,
    all_pairs_routes,
    get_topology,
    load_topology_file,
    save_graphml,
    save_toml,
)


def _snapshot(G: nx.DiGraph):
    """Everything that defines a topology, independent of insertion order but not of types."""
    typed = lambda d: {k: (type(v).__name__, v) for k, v in d.items()}  # noqa: E731  1 == 1.0 == True otherwise
    return (
        {k: v if k == "sources" else (type(v).__name__, v) for k, v in G.graph.items()},
        {n: typed(d) for n, d in G.nodes(data=True)},
        {(u, v): typed(d) for u, v, d in G.edges(data=True)},
    )


@pytest.mark.parametrize("name", TOPOLOGY_NAMES)
@pytest.mark.parametrize("suffix, save", [(".graphml", save_graphml), (".toml", save_toml)])
def test_round_trip_is_exact(tmp_path, name, suffix, save):
    G = get_topology(name)
    path = tmp_path / f"t{suffix}"
    save(G, path)
    H = get_topology(str(path))
    assert _snapshot(H) == _snapshot(G)
    assert list(H.nodes) == list(G.nodes)
    assert all_pairs_routes(H).routes == all_pairs_routes(G).routes
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary files left


def test_toml_writes_duplex_pairs_once_and_keeps_asymmetric_links(tmp_path):
    G = get_topology("tiny-ring4")
    G.edges["n0.gpu0", "n0.gpu1"]["bw_Bps"] = 5e9  # the other direction stays 100 GB/s
    path = tmp_path / "a.toml"
    save_toml(G, path)
    text = path.read_text()
    assert text.count("[[links]]") == 3 + 2 and text.count("duplex = false") == 2
    H = load_topology_file(path)
    assert H.edges["n0.gpu0", "n0.gpu1"]["bw_Bps"] == 5e9 and H.edges["n0.gpu1", "n0.gpu0"]["bw_Bps"] == 100e9


def test_handwritten_toml_with_integer_numbers_and_defaults(tmp_path):
    path = tmp_path / "two.toml"
    path.write_text(
        '[graph]\nname = "two"\np2p = true\ngpu = "l40s"\ngpus_per_node = 2\n'
        '[graph.sources]\nme = "measured by hand"\n'
        '[[nodes]]\nid = "g0"\nkind = "gpu"\nrank = 0\nserver = 0\n'
        '[[nodes]]\nid = "g1"\nkind = "gpu"\nrank = 1\nserver = 0\n'
        '[[links]]\na = "g0"\nb = "g1"\nbw_Bps = 25000000000\nlatency_s = 2e-6\nlink = "pcie4"\nsource = "me"\n'
    )
    G = get_topology(str(path))
    assert G.edges["g1", "g0"]["bw_Bps"] == 25e9 and isinstance(G.edges["g0", "g1"]["bw_Bps"], float)


def test_undirected_graphml_is_read_as_duplex(tmp_path):
    G = get_topology("tiny-ring4")
    U = G.to_undirected()
    U.graph = {k: v for k, v in G.graph.items() if k != "sources"}
    U.graph["sources_json"] = '{"generic": "x"}'
    path = tmp_path / "u.graphml"
    nx.write_graphml(U, path)
    assert get_topology(str(path)).number_of_edges() == G.number_of_edges()


GOOD_HEAD = '[graph]\nname = "t"\np2p = true\ngpu = "x"\ngpus_per_node = 1\n[graph.sources]\ns = "x"\n'
GPU = '[[nodes]]\nid = "g0"\nkind = "gpu"\nrank = 0\nserver = 0\n'


@pytest.mark.parametrize("text, problem", [
    ("[graph\nname = 1", "not valid TOML"),
    (GPU, "missing [graph] table"),
    (GOOD_HEAD + "[foo]\nx = 1\n", "unknown top-level key 'foo'"),
    ("nodes = 3\n" + GOOD_HEAD, "nodes must be an array of tables"),
    (GOOD_HEAD + '[[nodes]]\nkind = "gpu"\n', "nodes[0] needs a string 'id'"),
    (GOOD_HEAD + GPU + GPU, "node id 'g0' appears twice"),
    (GOOD_HEAD + GPU + '[[links]]\na = "g0"\nb = "zz"\n', "links[0] refers to unknown node 'zz'"),
    (GOOD_HEAD + GPU + '[[links]]\na = "g0"\nb = "g0"\nduplex = "yes"\n', "links[0].duplex must be true or false"),
    (GOOD_HEAD + '[[nodes]]\nid = "g0"\nkind = "gpu"\nrank = [0]\n', "nodes[0].rank must be a string"),
    (GOOD_HEAD.replace("[graph.sources]\ns = \"x\"\n", "sources = 3\n"), "[graph.sources] must map"),
    (GOOD_HEAD + '[[nodes]]\nid = "g0"\nkind = "tpu"\n', "node g0 has unknown kind 'tpu' (allowed: gpu, nvswitch"),
    (GOOD_HEAD + GPU + '[[nodes]]\nid = "s"\nkind = "nvswitch"\n'
     '[[links]]\na = "g0"\nb = "s"\nbw_Bps = -1.0\nlatency_s = 1e-6\nlink = "l"\nsource = "s"\n',
     "edge g0->s has bw_Bps=-1.0"),
])
def test_malformed_toml_is_one_line_naming_the_file(tmp_path, text, problem):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(TopologyError) as exc:
        get_topology(str(path))
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ") and problem in msg


@pytest.mark.parametrize("text, problem", [
    ("<graphml><graph", "not valid GraphML"),
    ('<?xml version="1.0"?><graphml xmlns="http://graphml.graphdrawing.org/xmlns">'
     '<key id="d0" for="graph" attr.name="sources_json" attr.type="string"/>'
     '<graph edgedefault="directed"><data key="d0">{oops</data></graph></graphml>', "sources_json is not JSON"),
    ('<?xml version="1.0"?><graphml xmlns="http://graphml.graphdrawing.org/xmlns">'
     '<graph edgedefault="directed"><node id="a"/></graph></graphml>', "graph attribute 'name'"),
])
def test_malformed_graphml_is_one_line_naming_the_file(tmp_path, text, problem):
    path = tmp_path / "bad.graphml"
    path.write_text(text)
    with pytest.raises(TopologyError) as exc:
        load_topology_file(path)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ") and problem in msg


@pytest.mark.parametrize("name, problem", [
    ("missing.toml", "file not found"),
    ("topo.json", "unknown topology file type '.json'"),
])
def test_missing_or_unknown_file_type(tmp_path, name, problem):
    path = tmp_path / name
    if path.suffix == ".json":
        path.write_text("{}")
    with pytest.raises(TopologyError, match=problem):
        get_topology(str(path))


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    G = get_topology("tiny-ring4")
    path = tmp_path / "t.toml"
    save_toml(G, path)
    before = path.read_text()
    G.nodes["n0.gpu0"]["weird"] = {"not": "scalar"}
    with pytest.raises(TopologyError, match="cannot save node n0.gpu0 attribute 'weird'"):
        save_toml(G, path)
    assert path.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["t.toml"]


def test_save_creates_missing_directory_and_leaves_no_temp(tmp_path):
    target = Path(tmp_path / "no" / "t.graphml")
    save_graphml(get_topology("tiny-ring4"), target)
    assert target.is_file() and [p.name for p in target.parent.iterdir()] == ["t.graphml"]
    assert (target.stat().st_mode & 0o777) == 0o644


def test_toml_example_in_docs_loads(tmp_path):
    doc = (Path(__file__).parents[1] / "docs" / "topologies.md").read_text()
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "lab.toml"
    path.write_text(example)
    G = get_topology(str(path))
    assert G.number_of_edges() == 4 and all_pairs_routes(G).bottleneck_Bps[(0, 1)] == 22e9
