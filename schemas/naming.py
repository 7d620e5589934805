"""The one column-name rule: how a CSV header becomes a feature name.

Training, the config keys that name columns (`drop_columns`, `missing_values`, `split.group_by`,
`split.order_by`), the curated schema, `dxpipe predict --csv` and the REST inputs all use this rule, so a
user may write a column either as the file spells it or as the model names it. It lives in `schemas/`, the
lowest layer, because serving applies it too.
"""

from __future__ import annotations

import re

LABEL = "label"
UNNAMED_PREFIX = "unnamed"


def feature_name(column: str, position: int | None = None) -> str:
    """Returns the feature name of a CSV column: `Mean Radius` -> `mean_radius`.

    Runs of characters other than ASCII letters and digits become one `_`; the result is lower case. A
    name that starts with a digit gets an `f_` prefix (TF signature inputs cannot start with one). A
    header cell that is empty (a spreadsheet's unnamed row-index column) becomes `unnamed_<position>`,
    the 0-based column position, so it is visible in every report and can be named in the config.

    Args:
        column: The header cell as the file has it.
        position: The column's 0-based position, used only for an empty name.
    """
    name = re.sub(r"[^0-9a-zA-Z]+", "_", column.strip().lstrip("\ufeff")).strip("_").lower()
    if not name:
        return f"{UNNAMED_PREFIX}_{position}" if position is not None else UNNAMED_PREFIX
    return name if not name[0].isdigit() else f"f_{name}"


def resolve(wanted: str, header: list[str]) -> int | None:
    """Returns the position of the header column a user-written name refers to, or None.

    The raw spelling wins; otherwise the name is compared after normalisation, so `Mean Radius`,
    `mean_radius` and `mean radius` all name the same column, and `unnamed_0` names an empty header cell.
    """
    stripped = [cell.strip().lstrip("\ufeff") for cell in header]
    if wanted in stripped:
        return stripped.index(wanted)
    target = feature_name(wanted)
    for position, cell in enumerate(stripped):
        if feature_name(cell, position) == target:
            return position
    return None
