"""Loading a network back from a folder nasdistill wrote, under its first import path; it lives in
:mod:`nasdistill.network.loading` (load, weights) and :mod:`nasdistill.network.folder` (file
names, digests)."""
from .network.folder import (EXPORT_INFO, FILES, RUN_RESULT, DigestMismatch, PathLike,  # noqa: F401
                             recorded_digests, sha256_file, verify_file)
from .network.loading import load, load_pt2, load_weights, load_with_record, read_record  # noqa: F401
from .network.loading import state_dict_diff as key_diff  # noqa: F401
from .network.loading import supernet_modules  # noqa: F401
from .network.record import FILENAME, ModelRecord  # noqa: F401
