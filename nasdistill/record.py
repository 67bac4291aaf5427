"""The model record under its first import path; it lives in :mod:`nasdistill.network.record`
(the record) and :mod:`nasdistill.network.source` (the parser of "a network given as data, text,
a file or a folder")."""
from .network.record import CODE_DIR, FILENAME, FORMAT, VERSION, ModelRecord, PathLike  # noqa: F401
from .network.source import arch_and_space, read_model_source

__all__ = ["FILENAME", "FORMAT", "ModelRecord", "VERSION", "arch_and_space", "read_model_source"]
