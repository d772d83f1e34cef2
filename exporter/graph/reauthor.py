"""Choosing the graph export converts: a recognised BiT re-authored into hubedge's edge graph, or the module as-is.

The published BiT modules compute GroupNorm through 5-D reshapes built from ``tf.shape`` at run time and
standardize their kernels at every call; every runtime runs that graph slower than the edge form
(``benchmarks/records/published-graph.md``). So by default (``graph="auto"``) a module whose variables make a
BiT (``hubedge.exporter.sources.bit_layout``) is rebuilt with the edge builder (``hubedge.exporter.sources.bit``):
static 4-D GroupNorm, the weight standardization folded into constant kernels. The rebuilt graph must compute what the
user's module computes: both run on held-apart photos before any export, and any difference beyond float rounding sends
the export down the as-is route with a warning. The module as loaded stays the FP32 reference that every artifact
is verified against, so verification proves the rebuilt artifacts right for the user's module.

Routes, recorded in every manifest under ``graph``:
- ``re-authored``: rebuilt in the edge form, with what was recognised and the equivalence figures;
- ``as-is``: the module's own graph, with why (asked for; hubedge's own edge build; not a BiT; a near miss).
  Its 5-D GroupNorms are computed in 4-D (``hubedge.exporter.graph.as_is``, recorded under ``rewrite``) when the
  rewritten graph proves equal to the module on the same photos; ``graph="verbatim"`` converts the graph untouched.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from hubedge.exporter.sources.bit_layout import BitLayout, Unrecognised, recognise
from hubedge.exporter.fsutil import sha256_of
from hubedge.exporter.sources import TWIN_VERSION, LoadedModel
from hubedge.runtimes.cache import cache_dir
from hubedge.runtimes.errors import HubedgeError

GRAPH_CHOICES = ("auto", "as-is", "verbatim")
REAUTHOR_VERSION = 1  # bump when the rebuilt graph changes, to invalidate cached rebuilds
PROBE_PHOTOS = 4
MAX_RELATIVE_DIFF = 1e-4  # of the largest output; measured 1e-6 between the two forms of one BiT
MIN_COSINE = 0.99999


def choose_graph(loaded: LoadedModel, graph: str = "auto") -> LoadedModel:
    """``loaded`` with its graph route chosen (``loaded.graph``, ``loaded.export_dir``); chosen once per model."""
    if graph not in GRAPH_CHOICES:
        raise HubedgeError(f"unknown graph route {graph!r}; choose {' or '.join(GRAPH_CHOICES)}")
    if graph not in loaded._routes:
        loaded._routes[graph] = _route(loaded, graph)
    export_dir, record = loaded._routes[graph]
    return dataclasses.replace(loaded, graph=record, export_dir=export_dir, _module=loaded._module,
                               _routes=loaded._routes)


def _own_graph(why: str, edge_form: bool = False) -> tuple[None, dict[str, Any]]:
    """The module's graph untouched: asked for, or already hubedge's edge form (``edge_form``: the graph the
    ONNX and OpenVINO writers of ``hubedge.exporter.formats.bit_graph`` write)."""
    return None, {"route": "as-is", "why": why, **({"edge_form": True} if edge_form else {})}


def _route(loaded: LoadedModel, graph: str) -> tuple[Path | None, dict[str, Any]]:
    if graph == "verbatim":
        return _own_graph("asked for (--graph verbatim): the module's own graph, not rewritten")

    def _as_is(why: str, warning: bool = False) -> tuple[Path | None, dict[str, Any]]:
        return _rewritten_as_is(loaded, {"route": "as-is", "why": why, **({"warning": True} if warning else {})})

    if graph == "as-is":
        return _as_is("asked for (--graph as-is): the module's own graph")
    if loaded.weights.get("graph") == "re-authored":
        return _own_graph("re-authored by hubedge already: its graph is the edge form", edge_form=True)
    if loaded.weights.get("graph") == "rewritten":
        return _own_graph("rewritten by hubedge already: its GroupNorms are 4-D")
    if loaded.weights.get("source") in ("seeded", "npz", "package") and loaded.weights.get("graph") != "published":
        return _own_graph("hubedge's own build: its graph is the edge form already",
                          edge_form=loaded.weights.get("source") != "package")
    module = loaded.module()
    found = recognise([(variable.name, variable.numpy()) for variable in getattr(module, "variables", [])])
    if isinstance(found, Unrecognised):
        if found.near_miss:
            return _as_is(f"looks like a BiT but does not match one: {found.reason}; exporting its own graph",
                          warning=True)
        return _as_is(f"not recognised as a BiT ({found.reason}); exporting its own graph")
    if (found.num_classes or found.architecture.feature_size) != loaded.info.num_outputs:
        return _as_is(f"its variables make a {found.describe()}, but it outputs {loaded.info.num_outputs} values; "
                      "exporting its own graph", warning=True)
    try:
        rebuilt = _rebuild(loaded, found)
        equivalence = _equivalence(loaded, dataclasses.replace(loaded, export_dir=rebuilt))
    except Exception as error:  # a cache that cannot be written, a graph TF cannot run: the module's own graph
        return _as_is(f"its variables make a {found.describe()}, but re-authoring failed ({_first_line(error)}); "
                      "exporting its own graph", warning=True)
    if not equivalence["equal"]:
        return _as_is(f"its variables make a {found.describe()}, but the rebuilt graph computes something else "
                      f"(max relative difference {equivalence['max_relative_diff']:.2g}, cosine_min "
                      f"{equivalence['cosine_min']:.6f}); exporting its own graph", warning=True)
    catalog = loaded.spec.architecture if loaded.spec is not None else None
    note = ({"note": f"the catalog lists {catalog.label} for {loaded.info.handle}; the module is a "
                     f"{found.architecture.label}"} if catalog is not None and catalog != found.architecture else {})
    return rebuilt, {"route": "re-authored", "why": f"recognised as a {found.describe()}", **note, "edge_form": True,
                     "architecture": found.architecture.label, "units": list(found.architecture.units),
                     "width": found.architecture.width, "num_classes": found.num_classes,
                     "matched_by": found.matched_by,
                     "builder": "hubedge.exporter.sources.bit (edge: static 4-D GroupNorm, "
                                "weight standardization folded into constant kernels)",
                     "rebuilt_savedmodel": str(rebuilt), "equivalence": equivalence}


def _rewritten_as_is(loaded: LoadedModel, record: dict[str, Any]) -> tuple[Path | None, dict[str, Any]]:
    """The as-is route with its 5-D GroupNorms in 4-D when the rewritten graph equals the module; the module's
    own graph, with the reason in ``record["rewrite"]``, when there was nothing to rewrite or it did not hold."""
    from hubedge.exporter.graph.as_is import rewritten_savedmodel

    try:
        directory, rewrite = rewritten_savedmodel(loaded)
        if directory is not None:
            rewrite["equivalence"] = _equivalence(loaded, dataclasses.replace(loaded, export_dir=directory))
    except Exception as error:  # a graph the rewrite cannot freeze or save: the module's own graph
        return None, {**record, "warning": True,
                      "rewrite": {"used": False, "why": f"the rewrite failed ({_first_line(error)})"}}
    if directory is None:
        return None, {**record, "rewrite": {"used": False, "why": "no 5-D GroupNorm to rewrite", **rewrite}}
    if not rewrite["equivalence"]["equal"]:
        figures = rewrite["equivalence"]
        return None, {**record, "warning": True, "rewrite": {
            "used": False, **rewrite, "why": f"the rewritten graph computes something else (max relative "
            f"difference {figures['max_relative_diff']:.2g}, cosine_min {figures['cosine_min']:.6f})"}}
    return directory, {**record, "rewrite": {"used": True, **rewrite, "rewritten_savedmodel": str(directory)}}


def _first_line(error: Exception) -> str:
    """``Type: first line of the message`` (at most 200 characters of it), for a one-line warning."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:200] if text else ''}"


def _rebuild(loaded: LoadedModel, layout: BitLayout) -> Path:
    """The edge-form SavedModel of ``layout``'s weights, cached by the original's variables."""
    from hubedge.exporter.sources.bit import BitTwin
    from hubedge.exporter.sources.savedmodel import save_hub_module

    digest = sha256_of(loaded.savedmodel_dir / "variables")[:16]  # the variables themselves, not a record of them
    version = f"v{REAUTHOR_VERSION}.{TWIN_VERSION}"  # a builder change must not reuse old rebuilds
    directory = cache_dir() / "reauthored" / version / f"{loaded.info.name}-{digest}"
    if (directory / "saved_model.pb").is_file():
        return directory
    twin = BitTwin(layout.architecture, layout.num_classes, fold_standardization=True)
    twin.set_weights(layout.weights, source=str(loaded.savedmodel_dir))
    record = {key: value for key, value in loaded.weights_record().items() if key not in ("sha256", "savedmodel")}
    record.update(graph="re-authored", reauthored_from=str(loaded.savedmodel_dir), reauthored_from_sha256=digest)
    save_hub_module(twin.model, loaded.info, directory, record)
    return directory


def _equivalence(loaded: LoadedModel, rebuilt: LoadedModel) -> dict[str, Any]:
    """Both graphs (the module as loaded, and ``rebuilt.export_module()``, loaded once for the export too) on
    held-apart photos: the largest difference relative to the largest output, the lowest per-image cosine, and
    whether the top-1 of every image agrees."""
    from hubedge import calibration_data
    import tensorflow as tf

    from hubedge.runtimes.preprocess import preprocess

    images = tf.constant(preprocess(calibration_data.evaluation_photos()[:PROBE_PHOTOS], loaded.info.input_size))
    original = np.asarray(loaded.module()(images), np.float64).reshape(len(images), -1)
    candidate = np.asarray(rebuilt.export_module()(images), np.float64).reshape(len(images), -1)
    relative = float(np.abs(original - candidate).max() / max(np.abs(original).max(), 1e-30))
    norms = np.linalg.norm(original, axis=1) * np.linalg.norm(candidate, axis=1)
    cosine = float(np.min(np.sum(original * candidate, axis=1) / np.maximum(norms, 1e-30)))
    top1 = (loaded.info.task != "classification"  # the argmax of a feature vector means nothing
            or bool(np.all(original.argmax(axis=1) == candidate.argmax(axis=1))))
    equal = relative <= MAX_RELATIVE_DIFF and cosine >= MIN_COSINE and top1
    return {"images": len(images), "max_relative_diff": float(f"{relative:.3g}"), "cosine_min": round(cosine, 9),
            "top1_equal": top1, "equal": bool(equal)}


def describe_route(record: dict[str, Any]) -> str:
    """One line for the user: which graph is exported, and why."""
    if record["route"] == "re-authored":
        return (f"graph: re-authored into the edge form ({record['why']}; rebuilt graph equals the module to "
                f"{record['equivalence']['max_relative_diff']:.1g} relative)")
    prefix = "warning: graph: as-is, " if record.get("warning") else "graph: as-is, "
    rewrite = record.get("rewrite")
    if rewrite and rewrite["used"]:
        left = f", {rewrite['group_norms_left']} left as they were" if rewrite["group_norms_left"] else ""
        suffix = (f"; its {rewrite['group_norms_in_4d']} 5-D GroupNorms computed in 4-D{left} (equal to the module "
                  f"to {rewrite['equivalence']['max_relative_diff']:.1g} relative)")
    elif rewrite and rewrite["why"] != "no 5-D GroupNorm to rewrite":
        suffix = f"; GroupNorm rewrite not used: {rewrite['why']}"
    else:
        suffix = ""
    return prefix + record["why"] + suffix
