"""Standard TFLite Metadata on every ``.tflite`` artifact, so MediaPipe Tasks and the TFLite Task Library load it.

Mobile SDKs (MediaPipe Tasks' ``ImageClassifier`` / ``ImageEmbedder``, the Task Library, Android Studio's ML
Model Binding) read one thing: the ``TFLITE_METADATA`` entry, a ``ModelMetadata`` flatbuffer, with its
associated files (``labels.txt``, score calibration) zipped after the model. A float input needs
``NormalizationOptions`` in it or the SDK refuses the model. hubedge writes it with MediaPipe's own metadata
writers (``mediapipe.tasks.python.metadata.metadata_writers``, pinned in the ``export`` extra):

- input: the image, RGB, normalised as ``(pixel - 0) / 255`` (hubedge's [0, 1] contract; for uint8 input
  the SDK feeds raw pixels and the tensor's own scale 1/255 does the same);
- classifiers: ``labels.txt`` with the WordNet ids (MediaPipe's ``category_name``) and ``labels_en.txt`` with
  the lemmas (its ``display_name``, the default ``en`` locale); multi-label (sigmoid) heads get a score
  calibration that is exactly the logistic function; softmax heads have the softmax in the graph
  (``hubedge.exporter.formats.tflite``), because metadata cannot express one;
- feature vectors: an image input and a feature output, which is all ``ImageEmbedder`` needs.

Two defects of mediapipe 1.2.3 are worked around here, each where it is: its metadata package imports a
compiled module the wheel does not ship (``_pywrap_metadata_version``; :func:`metadata_writers`), and its writer ends
the score-calibration file with a newline that reads as one class too many (``_Writer``). The writer zips the
associated files stamped with the current time; :func:`reproducible` re-stamps them, so the same export gives
the same bytes. The measured facts
behind all of this: ``docs/stack-facts.md``, "Mobile SDKs and TFLite Metadata".
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from hubedge.runtimes.errors import HubedgeError
from hubedge.runtimes.modelinfo import ModelInfo

INPUT_NORM_MEAN = [0.0]
INPUT_NORM_STD = [255.0]  # (pixel - 0) / 255: the [0, 1] floats every hubedge model takes
LABEL_FILE = "labels.txt"  # WordNet ids: MediaPipe's category_name
DISPLAY_LABEL_FILE = "labels_en.txt"  # lemmas: its display_name for the default "en" locale
MISSING_MODULE = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
ZIP_TIME = (2000, 1, 1, 0, 0, 0)  # the associated files' time in the zip, so the same export gives the same bytes


def metadata_writers():
    """MediaPipe's ``metadata_writer`` module, importable even from the mediapipe 1.2.3 wheel.

    That wheel's ``metadata.py`` still imports a pybind module that the 0.10.30+ wheels stopped shipping; its
    one use is ``GetMinimumMetadataParserVersion``. Where the import fails for exactly that module, a pure
    Python stand-in (:func:`minimum_parser_version`) is registered under its name; any other failure is
    reported as an install problem."""
    try:
        return importlib.import_module("mediapipe.tasks.python.metadata.metadata_writers.metadata_writer")
    except ModuleNotFoundError as error:
        if error.name is None or not MISSING_MODULE.startswith(error.name):
            raise HubedgeError(f"MediaPipe's metadata writers do not import ({error}); reinstall with "
                               "pip install 'hubedge[export]'") from None
    parents = MISSING_MODULE.split(".")
    for depth in range(3, len(parents)):  # mediapipe.tasks.cc, .metadata, .python: empty packages
        name = ".".join(parents[:depth])
        sys.modules.setdefault(name, types.ModuleType(name)).__path__ = []
    stand_in = types.ModuleType(MISSING_MODULE)
    stand_in.GetMinimumMetadataParserVersion = minimum_parser_version
    sys.modules[MISSING_MODULE] = stand_in
    setattr(sys.modules[".".join(parents[:-1])], parents[-1], stand_in)
    for name in [n for n in sys.modules if n.startswith("mediapipe.tasks.python.metadata")]:
        del sys.modules[name]  # the failed import left half-initialised modules behind
    return importlib.import_module("mediapipe.tasks.python.metadata.metadata_writers.metadata_writer")


# The metadata schema's members added after version 1.0.0, and the parser version that first reads each
# (the schema's own version history, as MediaPipe's C++ metadata_version.cc applies it).
TOKENIZER_VERSIONS = {"BertTokenizerOptions": (1, 1, 0), "SentencePieceTokenizerOptions": (1, 1, 0),
                      "RegexTokenizerOptions": (1, 2, 1)}


def minimum_parser_version(metadata_buffer: bytes) -> str:
    """The oldest metadata parser that can read ``metadata_buffer``: ``1.0.0`` unless a later member is used."""
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

    metadata = fb.ModelMetadataT.InitFromObj(fb.ModelMetadata.GetRootAsModelMetadata(bytearray(metadata_buffer), 0))
    option_names = {value: name for name, value in vars(fb.ProcessUnitOptions).items() if not name.startswith("_")}
    versions = [(1, 0, 0)]

    def files(items) -> None:
        for item in items or []:
            versions.extend([(1, 0, 1)] * (item.type == fb.AssociatedFileType.VOCABULARY)
                            + [(1, 4, 0)] * (item.type == fb.AssociatedFileType.SCANN_INDEX_FILE)
                            + [(1, 4, 1)] * (item.version is not None))

    def units(items) -> None:
        for unit in items or []:
            versions.append(TOKENIZER_VERSIONS.get(option_names.get(unit.optionsType, ""), (1, 0, 0)))

    for graph in metadata.subgraphMetadata or []:
        for tensor in (graph.inputTensorMetadata or []) + (graph.outputTensorMetadata or []):
            files(tensor.associatedFiles)
            units(tensor.processUnits)
            if tensor.content is not None and tensor.content.contentPropertiesType == fb.ContentProperties.AudioProperties:
                versions.append((1, 3, 0))
        files(graph.associatedFiles)
        for present, version in ((graph.inputProcessUnits, (1, 1, 0)), (graph.outputProcessUnits, (1, 1, 0)),
                                 (graph.inputTensorGroups, (1, 2, 0)), (graph.outputTensorGroups, (1, 2, 0)),
                                 (graph.customMetadata, (1, 5, 0))):
            if present is not None:
                versions.append(version)
        units(graph.inputProcessUnits)
        units(graph.outputProcessUnits)
    files(metadata.associatedFiles)
    return ".".join(map(str, max(versions)))


def _writer_class():
    base = metadata_writers().MetadataWriter

    class _Writer(base):
        """MediaPipe's generic writer, with a score-calibration file of exactly one line per class.

        Its own ``_export_calibration_file`` ends every line, the last too, with a newline; readers then count
        one class more than the model has (21844 sigmoids for 21843 logits), and MediaPipe fails at
        ``classify``. Lines here are joined instead, in the format the writer documents."""

        def _export_calibration_file(self, filename: str, calibrations: list) -> str:
            import os

            lines = ["" if item is None else ",".join(str(v) for v in (item.scale, item.slope, item.offset,
                                                                       item.min_score) if v is not None)
                     for item in calibrations]
            path = os.path.join(self._temp_folder.name, filename)
            with open(path, "w") as handle:
                handle.write("\n".join(lines))
            self._associated_files.append(path)
            return path

        def __del__(self) -> None:  # the base's cleanup fails when run at interpreter shutdown
            folder = getattr(self, "_temp_folder", None)
            if folder is not None:
                folder.cleanup()

    return _Writer


def with_standard_metadata(content: bytes, info: ModelInfo, description: str) -> bytes:
    """``content`` with a ``TFLITE_METADATA`` entry and its associated files, for ``ImageClassifier`` (a
    classifier) or ``ImageEmbedder`` (a feature vector). Entries already in the model are kept."""
    module = metadata_writers()
    writer = _writer_class().create(bytearray(content))
    writer.add_general_info(info.name, description)
    writer.add_image_input(INPUT_NORM_MEAN, INPUT_NORM_STD)
    if info.task == "feature_vector":
        writer.add_feature_output(name="embedding", description=f"{info.num_outputs}-d image feature vector")
    else:
        writer.add_classification_output(_labels(module, info), _score_calibration(module, info),
                                         description=_scores_description(info))
    model, _ = writer.populate()
    return reproducible(bytes(model))


def reproducible(content: bytes) -> bytes:
    """``content`` with the zip of associated files after the flatbuffer rewritten entry for entry, each at
    :data:`ZIP_TIME` instead of the moment it was written (same names, order, bytes and storage)."""
    import io
    import zipfile

    if not zipfile.is_zipfile(io.BytesIO(content)):
        return content  # no associated files (a feature vector)
    with zipfile.ZipFile(io.BytesIO(content)) as packed:
        entries = [(info, packed.read(info)) for info in packed.infolist()]
    if not entries:
        return content
    start = min(info.header_offset for info, _ in entries)
    buffer = io.BytesIO(content[:start])
    buffer.seek(0, io.SEEK_END)
    with zipfile.ZipFile(buffer, "a") as packed:  # the flatbuffer is no zip: "a" appends a new archive
        for info, data in entries:
            packed.writestr(zipfile.ZipInfo(info.filename, date_time=ZIP_TIME), data, compress_type=info.compress_type)
    return buffer.getvalue()


def _labels(module, info: ModelInfo):
    from hubedge.runtimes.labels import load_labels

    if not info.labels:
        return None
    labels = load_labels(info.labels)
    return (module.Labels().add(list(labels.wordnet_ids), exported_filename=LABEL_FILE)
            .add(list(labels.lemmas), "en", exported_filename=DISPLAY_LABEL_FILE))


def _score_calibration(module, info: ModelInfo):
    """For a sigmoid head, per class ``scale / (1 + exp(-(slope * logit + offset)))`` with 1, 1, 0: the
    logistic function itself, applied by the SDK to the raw logits."""
    if info.activation != "sigmoid":
        return None
    identity = module.ScoreCalibration.transformation_types.IDENTITY
    ones = module.CalibrationParameter(scale=1.0, slope=1.0, offset=0.0)
    return module.ScoreCalibration(identity, [ones] * info.num_outputs)


def _scores_description(info: ModelInfo) -> str:
    if info.activation == "sigmoid":
        return "multi-label logits; the score calibration turns each into an independent sigmoid probability"
    if info.activation == "softmax" and info.activation_in_graph:
        return "softmax probabilities over the classes (computed in the graph)"
    if info.activation == "softmax":
        return "logits of a softmax head: this all-integer file leaves the softmax to the app"
    return "raw scores"


def read_standard_metadata(content: bytes) -> dict[str, Any]:
    """The ``TFLITE_METADATA`` of a model as JSON, and the names of its associated files, read with MediaPipe's
    metadata displayer (a reader independent of the writer that made them)."""
    import json

    displayer = metadata_writers().metadata.MetadataDisplayer.with_model_buffer(bytearray(content))
    return {"metadata": json.loads(displayer.get_metadata_json()),
            "associated_files": sorted(displayer.get_packed_associated_file_list())}
