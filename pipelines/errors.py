"""The exception root, re-exported for the pipeline layer; it is defined in `schemas.errors`.

The root lives in the lowest layer so components, models and serving can raise it without importing
`pipelines/` (see the import-linter contract in `.importlinter`).
"""

from schemas.errors import ConfigError, DataError, DataGateError, DxpipeError

__all__ = ["ConfigError", "DataError", "DataGateError", "DxpipeError"]
