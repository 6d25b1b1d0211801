"""Row ids as the API takes them, 1..2^63-1 (SQLite's INTEGER), so the OpenAPI document states the range kept.

`RowId` is for msgspec body fields (this module imports no web framework: the camera, worker and outputs
processes load the schemas too); path and query ids use `Id` / `OptionalId` of appliance/dependencies.py.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

MAX_ID = 2**63 - 1  # SQLite's largest INTEGER

RowId = Annotated[int, msgspec.Meta(gt=0, le=MAX_ID)]
