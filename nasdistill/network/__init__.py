"""A network on disk: its record, its weights and their digests, and where its architecture
comes from. Load, export, distillation and the main job all ask this package; it needs nothing
from the training engine.

- :mod:`.record`: :class:`ModelRecord`, the network as data (``model.json``);
- :mod:`.source`: :func:`read_model_source`, the one parser for "a network given as a mapping,
  JSON text, a file or a folder", and :func:`record_from_source`, the one resolver from such a
  source (and a space) to a record;
- :mod:`.folder`: the files of an export folder or run directory, :func:`write_weights`, and the
  digests every weights file is checked against (:func:`verify_file`);
- :mod:`.loading`: :func:`load` / :func:`load_with_record` (record + weights, checked),
  :func:`build_with_weights` for a record read first, and :func:`load_weights` into a network
  built elsewhere;
- :mod:`.export`: :func:`export_model`, a standalone folder (weights, ``model.json``,
  ``model.py``, ``torch.export``, ONNX), each reloaded and compared; :mod:`.model_source` writes
  its ``model.py``.
"""
from .folder import (EXPORT_INFO, FILES, RUN_FILES, RUN_RESULT, DigestMismatch, recorded_digests, sha256_file,
                     verify_file, write_weights)
from .loading import (build_with_weights, load, load_pt2, load_weights, load_with_record, read_record,
                      state_dict_diff, supernet_modules)
from .record import CODE_DIR, FILENAME, FORMAT, VERSION, ModelRecord
from .export import export_model, finished_export, format_result, onnx_available
from .source import ModelSource, SourceNames, read_model_source, record_from_source

__all__ = ["CODE_DIR", "DigestMismatch", "EXPORT_INFO", "FILENAME", "FILES", "FORMAT", "ModelRecord",
           "RUN_FILES", "RUN_RESULT", "ModelSource", "SourceNames", "VERSION", "build_with_weights",
           "export_model", "finished_export", "format_result", "load", "onnx_available",
           "load_pt2", "load_weights", "load_with_record", "read_model_source", "read_record",
           "record_from_source", "recorded_digests", "sha256_file", "state_dict_diff", "supernet_modules",
           "verify_file", "write_weights"]
