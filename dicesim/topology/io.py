"""Read and write topologies as GraphML or TOML; writes are atomic, read errors are one line.

TOML layout (hand-writable; see docs/topologies.md)::

    [graph]                 # name, p2p, gpu, gpus_per_node
    [graph.sources]         # citation key = "text"
    [[nodes]]               # id, kind, and for GPUs rank and server
    [[links]]               # a, b, bw_Bps, latency_s, link, source, duplex (default true: both directions)

GraphML stores the same attributes natively; the ``sources`` table travels as a JSON string
in the graph attribute ``sources_json``. An undirected GraphML file is read as duplex links.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import networkx as nx
import tomli_w
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as defused_fromstring

from dicesim.atomic import write_text_atomic
from dicesim.errors import TopologyError
from dicesim.inputs import check_regular_file, read_bytes_bounded
from dicesim.limits import MAX_TEXT_FILE_BYTES, MAX_TOPOLOGY_EDGES, MAX_TOPOLOGY_NODES
from dicesim.strict_table import ascii_int, take_table
from dicesim.tomlio import read_toml
from dicesim.topology.validate import validate_topology


def _write_text(path: Path, text: str) -> None:
    write_text_atomic(text, path)


_SCALARS = (str, int, float, bool)
_LINK_KEYS = ("a", "b", "bw_Bps", "latency_s", "link", "source")


def _scalar_items(where: str, attrs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in attrs.items():
        if v is None:
            continue
        if not isinstance(v, _SCALARS):
            raise TopologyError(f"cannot save {where} attribute {k!r} of type {type(v).__name__}")
        out[k] = v
    return out


def _graph_extras(G: nx.DiGraph) -> dict[str, Any]:
    return _scalar_items("graph", {k: v for k, v in G.graph.items() if k != "sources"})


def save_graphml(G: nx.DiGraph, path: str | os.PathLike[str]) -> None:
    """Write G as GraphML (atomically); ``sources`` is stored as the JSON string ``sources_json``."""
    H = nx.DiGraph()
    H.graph.update(_graph_extras(G), sources_json=json.dumps(G.graph.get("sources", {}), sort_keys=True))
    for n, d in G.nodes(data=True):
        H.add_node(n, **_scalar_items(f"node {n}", d))
    for u, v, d in G.edges(data=True):
        H.add_edge(u, v, **_scalar_items(f"edge {u}->{v}", d))
    _write_text(Path(path), "\n".join(nx.generate_graphml(H)) + "\n")


def save_toml(G: nx.DiGraph, path: str | os.PathLike[str]) -> None:
    """Write G as TOML (atomically); a pair of opposite edges with equal attributes becomes one duplex link."""
    graph = {**_graph_extras(G), "sources": dict(G.graph.get("sources", {}))}
    nodes = [{"id": n, **_scalar_items(f"node {n}", d)} for n, d in G.nodes(data=True)]
    links, emitted = [], set()
    for u, v, d in G.edges(data=True):
        if (u, v) in emitted:
            continue
        attrs = _scalar_items(f"edge {u}->{v}", d)
        duplex = G.has_edge(v, u) and G.edges[v, u] == d and (v, u) not in emitted
        emitted.update({(u, v), (v, u)} if duplex else {(u, v)})
        ordered = {k: attrs[k] for k in _LINK_KEYS[2:] if k in attrs}
        ordered.update({k: x for k, x in attrs.items() if k not in ordered})
        links.append({"a": u, "b": v, **ordered, "duplex": duplex})
    text = tomli_w.dumps({"graph": graph, "nodes": nodes, "links": links})
    _write_text(Path(path), text)


#: the attributes a topology file may set (docs/topologies.md, "Data model"); anything else is
#: refused by name rather than carried along unread
GRAPH_KEYS = ("name", "p2p", "gpu", "gpus_per_node", "sources")
NODE_KEYS = ("kind", "rank", "server")
EDGE_KEYS = ("bw_Bps", "latency_s", "link", "source")


def _check_keys(G: nx.DiGraph, path: Path) -> None:
    def error(field: str, problem: str, allowed: object) -> TopologyError:
        return TopologyError(f"{path}: {field}: {problem} (allowed: {', '.join(map(str, allowed))})")

    take_table(G.graph, GRAPH_KEYS, "graph", error)
    for n, d in G.nodes(data=True):
        take_table(d, NODE_KEYS, f"node {n}", error)
    for u, v, d in G.edges(data=True):
        take_table(d, EDGE_KEYS, f"edge {u}->{v}", error)


def _coerce(G: nx.DiGraph) -> None:
    """Normalise number types so hand-written files compare equal to built graphs."""
    for _, d in G.nodes(data=True):
        for k in ("rank", "server"):
            # ASCII digits only: "²" passes str.isdigit and fails int(), "٣" would read as 3
            if isinstance(d.get(k), str) and ascii_int(d[k]) is not None:
                d[k] = ascii_int(d[k])
    for _, _, d in G.edges(data=True):
        for k in ("bw_Bps", "latency_s"):
            v = d.get(k)
            if isinstance(v, int) and not isinstance(v, bool):
                d[k] = float(v)
            elif isinstance(v, str):
                try:
                    d[k] = float(v)
                except ValueError:
                    pass  # validation names the bad value


def _load_graphml(path: Path) -> nx.DiGraph:
    raw = read_bytes_bounded(path, MAX_TEXT_FILE_BYTES, lambda problem: TopologyError(f"{path}: {problem}"),
                             what="GraphML file")
    # defusedxml first: a document type declaration can define entities (billion laughs) or
    # point at external files (XXE); GraphML needs neither, so any DTD is refused outright
    try:
        defused_fromstring(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise TopologyError(f"{path}: refused GraphML with a DTD, entity or external reference "
                            f"({type(exc).__name__}); entity expansion and external entities are not allowed") from None
    except Exception as exc:  # noqa: BLE001 -- any parser error of a malformed file
        raise TopologyError(f"{path}: not valid GraphML (XML): {' '.join(str(exc).split())[:200]}") from None
    try:
        with warnings.catch_warnings():  # "no key type ... using string": validation names what is wrong
            warnings.simplefilter("ignore")
            G = nx.parse_graphml(raw)
    except Exception as exc:  # ElementTree, networkx and type errors alike
        raise TopologyError(f"{path}: not valid GraphML: {' '.join(str(exc).split())[:200]}") from None
    if G.is_multigraph():
        raise TopologyError(f"{path}: parallel edges are not supported; merge them into one link")
    G = nx.DiGraph(G) if G.is_directed() else G.to_directed()
    for k in ("node_default", "edge_default"):
        G.graph.pop(k, None)
    raw = G.graph.pop("sources_json", "{}")
    try:
        sources = json.loads(raw)
    except (TypeError, json.JSONDecodeError) as exc:
        raise TopologyError(f"{path}: graph attribute sources_json is not JSON ({exc})") from None
    if not isinstance(sources, dict):
        raise TopologyError(f"{path}: graph attribute sources_json must be a JSON object")
    G.graph["sources"] = sources
    return G


def _table(path: Path, where: str, x: object) -> dict[str, Any]:
    if not isinstance(x, dict):
        raise TopologyError(f"{path}: {where} must be a table")
    for k, v in x.items():
        if k != "sources" and not isinstance(v, _SCALARS):
            raise TopologyError(f"{path}: {where}.{k} must be a string, number or boolean")
    return x


def _load_toml(path: Path) -> nx.DiGraph:
    doc = read_toml(path, what="topology", error=lambda problem: TopologyError(f"{path}: {problem}"))
    unknown = sorted(set(doc) - {"graph", "nodes", "links"})
    if unknown:
        raise TopologyError(f"{path}: unknown top-level key {unknown[0]!r} (allowed: graph, nodes, links)")
    if "graph" not in doc:
        raise TopologyError(f"{path}: missing [graph] table")
    graph = dict(_table(path, "[graph]", doc["graph"]))
    graph.setdefault("sources", {})
    if not isinstance(graph["sources"], dict) or not all(isinstance(v, str) for v in graph["sources"].values()):
        raise TopologyError(f"{path}: [graph.sources] must map citation keys to strings")
    G = nx.DiGraph()
    G.graph.update(graph)
    for key in ("nodes", "links"):
        if not isinstance(doc.get(key, []), list):
            raise TopologyError(f"{path}: {key} must be an array of tables ([[{key}]])")
    for i, node in enumerate(doc.get("nodes", [])):
        node = dict(_table(path, f"nodes[{i}]", node))
        nid = node.pop("id", None)
        if not isinstance(nid, str) or not nid:
            raise TopologyError(f"{path}: nodes[{i}] needs a string 'id'")
        if nid in G:
            raise TopologyError(f"{path}: node id {nid!r} appears twice")
        G.add_node(nid, **node)
    for i, link in enumerate(doc.get("links", [])):
        link = dict(_table(path, f"links[{i}]", link))
        a, b = link.pop("a", None), link.pop("b", None)
        duplex = link.pop("duplex", True)
        if not isinstance(duplex, bool):
            raise TopologyError(f"{path}: links[{i}].duplex must be true or false")
        for end in (a, b):
            if end not in G:
                raise TopologyError(f"{path}: links[{i}] refers to unknown node {end!r} (needs 'a' and 'b' node ids)")
        for u, v in ((a, b), (b, a)) if duplex else ((a, b),):
            if G.has_edge(u, v):
                raise TopologyError(f"{path}: links[{i}] repeats the directed edge {u}->{v}")
            G.add_edge(u, v, **dict(link))
    return G


def load_topology_file(path: str | os.PathLike[str]) -> nx.DiGraph:
    """Read and validate a .graphml or .toml topology; any problem -> TopologyError naming the file."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".graphml", ".toml"):
        raise TopologyError(f"{p}: unknown topology file type {suffix or '(none)'!r} (allowed: .graphml, .toml)")
    if not p.exists():
        raise TopologyError(f"{p}: file not found")
    check_regular_file(p, lambda problem: TopologyError(f"{p}: {problem}"))
    try:
        G = _load_graphml(p) if suffix == ".graphml" else _load_toml(p)
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError(f"{p}: cannot read ({exc.__class__.__name__})") from None
    if G.number_of_nodes() > MAX_TOPOLOGY_NODES or G.number_of_edges() > MAX_TOPOLOGY_EDGES:
        raise TopologyError(f"{p}: {G.number_of_nodes()} nodes and {G.number_of_edges()} directed edges, over the "
                            f"limits of {MAX_TOPOLOGY_NODES} nodes and {MAX_TOPOLOGY_EDGES} edges (see docs/limits.md)")
    _check_keys(G, p)
    _coerce(G)
    try:
        validate_topology(G)
    except TopologyError as exc:
        raise TopologyError(f"{p}: {exc.one_line()}") from None
    return G
