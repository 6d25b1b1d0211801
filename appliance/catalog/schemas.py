"""Request and response bodies of the datasets, images and annotations API."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from appliance.ids import MAX_ID

ImageStatus = Literal["unlabeled", "labeled", "reviewed"]
Color = Annotated[str, msgspec.Meta(pattern=r"^#[0-9a-fA-F]{6}$")]
ClassName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
DatasetName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Description = Annotated[str, msgspec.Meta(max_length=5000)]
Coordinate = Annotated[float, msgspec.Meta(ge=0)]
MAX_CLASSES = 1000  # classes of one dataset
ClassIndex = Annotated[int, msgspec.Meta(ge=0, le=MAX_CLASSES - 1)]  # a class's number in its dataset
Version = Annotated[int, msgspec.Meta(ge=0, le=MAX_ID)]


class ClassDef(msgspec.Struct, forbid_unknown_fields=True):
    name: ClassName
    color: Color | None = None


class ClassRead(msgspec.Struct):
    id: int
    name: str
    color: str


class DatasetCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: DatasetName
    description: Description = ""
    classes: Annotated[list[ClassDef | ClassName], msgspec.Meta(max_length=MAX_CLASSES)] = msgspec.field(
        default_factory=list
    )
    is_public: bool = False


class DatasetUpdate(msgspec.Struct, forbid_unknown_fields=True):
    name: DatasetName | None = None
    description: Description | None = None
    classes: Annotated[list[ClassDef | ClassName], msgspec.Meta(max_length=MAX_CLASSES)] | None = None
    is_public: bool | None = None


class DatasetRead(msgspec.Struct):
    id: int
    name: str
    description: str
    classes: list[ClassRead]
    is_public: bool
    owner_id: int
    owner: str
    image_count: int
    created_at: str
    updated_at: str


class ImageRead(msgspec.Struct):
    id: int
    dataset_id: int
    sha256: str
    width: int
    height: int
    size: int
    format: str
    original_name: str
    status: ImageStatus
    version: int
    box_count: int
    added_at: str
    checked: int = 1  # 0: thumbnail and full decode still to come (after an import), 1: decoded, 2: corrupt


class ImagePage(msgspec.Struct):
    """One keyset page: `next_cursor` goes into `after`, `prev_cursor` into `before`; `offset` is the
    position of the first item in the filtered order (0-based), `total` the filtered count."""

    items: list[ImageRead]
    next_cursor: int | None
    total: int
    prev_cursor: int | None = None
    offset: int = 0


class UploadRejected(msgspec.Struct):
    name: str
    status_code: int
    reason: str


class UploadDuplicate(msgspec.Struct):
    name: str
    image_id: int
    reason: str


class UploadResult(msgspec.Struct):
    added: list[ImageRead]
    duplicates: list[UploadDuplicate]
    rejected: list[UploadRejected]


class Box(msgspec.Struct, forbid_unknown_fields=True):
    class_id: ClassIndex
    x1: Coordinate
    y1: Coordinate
    x2: Coordinate
    y2: Coordinate
    source: Literal["manual", "model", "import"] = "manual"
    confidence: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None


class BoxRead(msgspec.Struct):
    id: int
    class_id: int
    x1: float
    y1: float
    x2: float
    y2: float
    source: str
    confidence: float | None
    author_id: int | None


class AnnotationsPut(msgspec.Struct, forbid_unknown_fields=True):
    version: Version
    boxes: Annotated[list[Box], msgspec.Meta(max_length=5000)]
    status: ImageStatus | None = None


class AnnotationsRead(msgspec.Struct):
    image_id: int
    version: int
    status: ImageStatus
    width: int
    height: int
    boxes: list[BoxRead]
    updated_at: str | None
    updated_by: int | None


class ClassStats(msgspec.Struct):
    class_id: int
    name: str
    boxes: int
    images: int


class SizeBucket(msgspec.Struct):
    min_px: int
    max_px: int | None
    boxes: int


class DatasetStats(msgspec.Struct):
    dataset_id: int
    images: int
    by_status: dict[str, int]
    boxes: int
    classes: list[ClassStats]
    box_sizes: list[SizeBucket]
