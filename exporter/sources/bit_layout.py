"""Recognising a BiT from its variables alone: which architecture, which head, and every weight's official name.

Re-authoring (``hubedge.exporter.graph.reauthor``) needs the weights of a module it did not build. Published BiT modules
name their variables by Keras layer, so leaf names repeat (``group_norm/gamma``, ``standardized_conv2d/kernel``) and
cannot be relied on. What can be relied on is structure:

- the architecture follows from shapes that no removal or reordering disturbs: the root kernel ``[7, 7, 3, R]``
  gives the width (R = 64·w), and each stage's unit count is its number of ``[3, 3, F, F]`` kernels, F = R·2^s;
- the variables are then matched, in the order the authors' Keras model tracks them (root; per unit the GroupNorms
  and convolutions ``a``, ``b``, ``c``, then the projection; the pre-head GroupNorm; the head), against the order and
  shapes that architecture must have. Where names carry the official paths (``.npz`` files, SavedModels that kept
  them) they are matched by name instead.

A set that fits nowhere is either "not a BiT" or, when it has BiT's root and layer names, a near miss whose
reason names the first variable that does not fit. Nothing here decides that the numbers are right: re-authoring
proves that by running both graphs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from hubedge.exporter.sources.catalog import Architecture

# BiT's arithmetic (bit_tf2): weight standardization over a kernel's HWI axes, GroupNorm's groups and epsilon
WS_EPSILON = 1e-10
GN_GROUPS = 32
GN_EPSILON = 1e-5

ROOT = "resnet/root_block/standardized_conv2d/kernel"
PRE_HEAD = "resnet/group_norm"
HEAD = "resnet/head/conv2d"
STAGES = 4
_LEAF = re.compile(r"(gamma|beta|kernel|bias)$")


@dataclasses.dataclass(frozen=True)
class BitLayout:
    """A recognised BiT: its architecture, head width (None: a feature vector) and weights by official name."""

    architecture: Architecture
    num_classes: int | None
    weights: dict[str, np.ndarray]
    matched_by: str  # "names" or "layer order"

    def describe(self) -> str:
        head = f"a {self.num_classes}-way head" if self.num_classes else "no head (feature vector)"
        return f"BiT {self.architecture.label} with {head}, matched by {self.matched_by}"


@dataclasses.dataclass(frozen=True)
class Unrecognised:
    """Not a BiT this module can re-author; ``near_miss`` when it looks like one (its reason names the mismatch)."""

    reason: str
    near_miss: bool


def standardize_kernel(kernel: np.ndarray) -> np.ndarray:
    """BiT's weight standardization of an HWIO kernel, in float64: what the graph computes at every call."""
    kernel = np.asarray(kernel, np.float64)
    mean = kernel.mean(axis=(0, 1, 2), keepdims=True)
    variance = kernel.var(axis=(0, 1, 2), keepdims=True)
    return ((kernel - mean) / np.sqrt(variance + WS_EPSILON)).astype(np.float32)


def expected_layout(architecture: Architecture, num_classes: int | None) -> list[tuple[str, tuple[int, ...]]]:
    """Official names and checkpoint shapes, in the order the authors' Keras model tracks its variables."""
    root = architecture.root_filters
    layout: list[tuple[str, tuple[int, ...]]] = [(ROOT, (7, 7, 3, root))]

    def norm(prefix: str, channels: int) -> None:
        layout.extend([(f"{prefix}/gamma", (channels,)), (f"{prefix}/beta", (channels,))])

    channels = root
    for stage, units in enumerate(architecture.units):
        filters = architecture.stage_filters(stage)
        for unit in range(units):
            prefix = f"resnet/block{stage + 1}/unit{unit + 1:02d}"
            norm(f"{prefix}/a/group_norm", channels)
            layout.append((f"{prefix}/a/standardized_conv2d/kernel", (1, 1, channels, filters)))
            norm(f"{prefix}/b/group_norm", filters)
            layout.append((f"{prefix}/b/standardized_conv2d/kernel", (3, 3, filters, filters)))
            norm(f"{prefix}/c/group_norm", filters)
            layout.append((f"{prefix}/c/standardized_conv2d/kernel", (1, 1, filters, 4 * filters)))
            if unit == 0:  # BiT's first unit of every stage changes width or stride, so it projects the shortcut
                layout.append((f"{prefix}/a/proj/standardized_conv2d/kernel", (1, 1, channels, 4 * filters)))
            channels = 4 * filters
    norm(PRE_HEAD, channels)
    if num_classes is not None:
        layout.extend([(f"{HEAD}/kernel", (1, 1, channels, num_classes)), (f"{HEAD}/bias", (num_classes,))])
    return layout


def official_name(name: str) -> str:
    """A variable name as the checkpoints spell it: no ``:0``, nothing above ``resnet/``, the head as a conv."""
    name = name.split(":")[0]
    start = name.find("resnet/")
    name = name[start:] if start >= 0 else name
    return name.replace("resnet/head/dense/", "resnet/head/conv2d/")


def _looks_like_bit(variables: Sequence[tuple[str, np.ndarray]]) -> bool:
    first = variables[0][1].shape if variables else ()
    named = any("standardized_conv2d" in name or "group_norm" in name for name, _ in variables)
    return tuple(first[:3]) == (7, 7, 3) or named


def _architecture(root: tuple[int, ...], shapes: list[tuple[int, ...]]) -> Architecture | str:
    """The architecture the root kernel's and the other shapes imply, or why they imply none."""
    if len(root) != 4 or root[:3] != (7, 7, 3) or root[3] % 32:
        return f"its first variable has shape {root}, not BiT's 7x7 RGB root kernel [7, 7, 3, 64*width]"
    width = root[3] / 64
    units = tuple(sum(1 for s in shapes if s == (3, 3, root[3] * 2**stage, root[3] * 2**stage))
                  for stage in range(STAGES))
    if not all(units):
        return f"stage {units.index(0) + 1} has no 3x3 bottleneck kernel of {root[3] * 2 ** units.index(0)} filters"
    return Architecture(units, width)  # type: ignore[arg-type]


def _head(shapes: list[tuple[int, ...]], features: int) -> int | None:
    if len(shapes) >= 2 and len(shapes[-1]) == 1 and shapes[-2] in ((features, shapes[-1][0]),
                                                                    (1, 1, features, shapes[-1][0])):
        return shapes[-1][0]
    return None


def _fits(shape: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    """A Dense head kernel ``[F, C]`` fits the checkpoints' 1x1 conv ``[1, 1, F, C]``."""
    return shape == expected or (len(expected) == 4 and expected[:2] == (1, 1) and shape == expected[2:])


def recognise(variables: Sequence[tuple[str, np.ndarray]]) -> BitLayout | Unrecognised:
    """Matches ``(name, value)`` pairs, in the module's order, against the BiT layout their shapes imply. A value
    with a ``shape`` (an array, or a tensor read only when used) is kept as given; the layout's weights are those
    values."""
    variables = [(name, value if hasattr(value, "shape") else np.asarray(value)) for name, value in variables]
    if not variables:
        return Unrecognised("it has no variables", near_miss=False)
    near = _looks_like_bit(variables)
    shapes = [tuple(int(d) for d in value.shape) for _, value in variables]
    by_name = {official_name(name): value for name, value in variables}
    named = len(by_name) == len(variables) and ROOT in by_name  # official paths: match by name, in any order
    if ROOT not in by_name and sum(name.startswith("resnet/block") for name in by_name) > len(by_name) // 2:
        return Unrecognised(f"it lacks {ROOT}, BiT's root kernel", near_miss=True)
    architecture = _architecture(tuple(by_name[ROOT].shape) if named else shapes[0], shapes)
    if isinstance(architecture, str):
        return Unrecognised(architecture, near_miss=near)
    if named:
        head = f"{HEAD}/bias" in by_name and int(by_name[f"{HEAD}/bias"].shape[0]) or None
    else:
        head = _head(shapes, architecture.feature_size)
    layout = expected_layout(architecture, head)
    num_classes = layout[-1][1][0] if layout[-1][0] == f"{HEAD}/bias" else None
    expected_names = [name for name, _ in layout]
    if named:
        missing = [name for name in expected_names if name not in by_name]
        if missing:
            return Unrecognised(f"it lacks {missing[0]} (and {len(missing) - 1} more) of a BiT {architecture.label}",
                                near_miss=True)
        for name, shape in layout:
            if not _fits(by_name[name].shape, shape):
                return Unrecognised(f"{name} has shape {by_name[name].shape}; a BiT {architecture.label} has "
                                    f"{list(shape)} there", near_miss=True)
        extra = sorted(set(by_name) - set(expected_names))
        if extra:
            return Unrecognised(f"{extra[0]} is not a BiT {architecture.label} weight", near_miss=True)
        return BitLayout(architecture, num_classes, {n: by_name[n] for n in expected_names}, "names")
    for index, ((expected, shape), (name, value)) in enumerate(zip(layout, variables)):
        leaf = _LEAF.search(name.split(":")[0])
        if not _fits(value.shape, shape) or (leaf and not expected.endswith(leaf.group(1))):
            return Unrecognised(f"variable {index} ({name}, shape {list(value.shape)}) is where a BiT "
                                f"{architecture.label} has {expected} of shape {list(shape)}", near_miss=True)
    if len(variables) > len(layout):
        name, value = variables[len(layout)]
        return Unrecognised(f"variable {len(layout)} ({name}, shape {list(value.shape)}) is one more than a BiT "
                            f"{architecture.label} has", near_miss=True)
    if len(variables) < len(layout):
        return Unrecognised(f"it lacks {layout[len(variables)][0]} and {len(layout) - len(variables) - 1} more "
                            f"variables of a BiT {architecture.label}", near_miss=True)
    weights = {expected: value for (expected, _), (_, value) in zip(layout, variables)}
    return BitLayout(architecture, num_classes, weights, "layer order")
