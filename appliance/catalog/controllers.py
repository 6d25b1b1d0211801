"""HTTP routes for datasets, images, annotations and stats; the logic lives in the catalog's other modules."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, patch, post, put
from litestar.datastructures import State, UploadFile
from litestar.params import FromQuery, JSONBody, MultipartBody, QueryParameter
from litestar.response import File

from appliance.catalog import boxes, datasets, files, images, paging, stats, uploads
from appliance.catalog.schemas import (
    MAX_CLASSES,
    AnnotationsPut,
    AnnotationsRead,
    DatasetCreate,
    DatasetRead,
    DatasetStats,
    DatasetUpdate,
    ImagePage,
    ImageRead,
    ImageStatus,
    UploadResult,
)
from appliance.dependencies import DB, Caller, Id, Settings
from appliance.errors import NotFound, TooLarge
from appliance.ids import MAX_ID
from appliance.imaging.check import EXTENSION_TYPES, FORMATS
from appliance.imaging.thumbnail import THUMBNAIL_MEDIA_TYPE
from appliance.storage import read_upload

# Content-addressed files never change: the browser may keep them (privately, behind auth).
IMMUTABLE = {"Cache-Control": "private, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"}


class DatasetController(Controller):
    path = "/datasets"
    tags = ["datasets"]

    @get("/", operation_id="listDatasets", sync_to_thread=True)
    def list_datasets(self, db: DB, user: Caller) -> list[DatasetRead]:
        return datasets.list_datasets(db, user)

    @post("/", operation_id="createDataset", sync_to_thread=True)
    def create_dataset(self, data: JSONBody[DatasetCreate], db: DB, user: Caller) -> DatasetRead:
        return datasets.create_dataset(db, data, user)

    @get("/{dataset_id:int}", operation_id="getDataset", sync_to_thread=True)
    def get_dataset(self, dataset_id: Id, db: DB, user: Caller) -> DatasetRead:
        return datasets.get_dataset(db, dataset_id, user)

    @patch("/{dataset_id:int}", operation_id="updateDataset", sync_to_thread=True)
    def update_dataset(
        self, dataset_id: Id, data: JSONBody[DatasetUpdate], db: DB, user: Caller
    ) -> DatasetRead:
        return datasets.update_dataset(db, dataset_id, data, user)

    @delete("/{dataset_id:int}", operation_id="deleteDataset", sync_to_thread=True)
    def delete_dataset(self, dataset_id: Id, db: DB, user: Caller, state: State) -> None:
        datasets.delete_dataset(db, state.image_store, dataset_id, user)

    @get("/{dataset_id:int}/stats", operation_id="getDatasetStats", sync_to_thread=True)
    def stats(self, dataset_id: Id, db: DB, user: Caller) -> DatasetStats:
        return stats.dataset_stats(db, dataset_id, user)

    @get("/{dataset_id:int}/images", operation_id="listImages", sync_to_thread=True)
    def list_images(
        self,
        dataset_id: Id,
        db: DB,
        user: Caller,
        status: FromQuery[ImageStatus | None] = None,
        class_id: Annotated[int | None, QueryParameter(ge=0, le=MAX_CLASSES - 1)] = None,
        after: Annotated[
            int | None,
            QueryParameter(ge=0, le=MAX_ID, description="keyset cursor: images after this id (next_cursor)"),
        ] = None,
        before: Annotated[
            int | None,
            QueryParameter(ge=1, le=MAX_ID, description="keyset cursor: images before this id (prev_cursor)"),
        ] = None,
        around: Annotated[
            int | None,
            QueryParameter(ge=1, le=MAX_ID, description="the page holding this image, about half before it"),
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> ImagePage:
        return paging.list_images(
            db,
            dataset_id,
            user,
            status=status,
            class_id=class_id,
            after=after,
            before=before,
            around=around,
            limit=limit,
        )

    @post("/{dataset_id:int}/images", operation_id="uploadImages", sync_to_thread=True)
    def upload_images(
        self,
        dataset_id: Id,
        data: MultipartBody[list[UploadFile]],
        db: DB,
        user: Caller,
        config: Settings,
        state: State,
    ) -> UploadResult:
        limit = config.max_image_mb * 1024 * 1024
        incoming = []
        for upload in data:
            name = upload.filename or "upload"
            content = read_upload(upload.file, limit)
            if content is None:  # listed under `rejected` like any other bad file of the batch
                error = TooLarge(f"larger than the {config.max_image_mb} MB image limit")
                incoming.append(uploads.IncomingFile(name=name, data=b"", error=error))
            else:
                incoming.append(uploads.IncomingFile(name=name, data=content))
        return uploads.add_images(db, state.image_store, config, dataset_id, user, incoming)


class ImageController(Controller):
    path = "/images"
    tags = ["images"]

    @get("/{image_id:int}", operation_id="getImage", sync_to_thread=True)
    def get_image(self, image_id: Id, db: DB, user: Caller) -> ImageRead:
        return images.get_image(db, image_id, user)

    @get("/{image_id:int}/file", operation_id="getImageFile", sync_to_thread=True, media_type="image/*")
    def image_file(self, image_id: Id, db: DB, user: Caller, state: State) -> File:
        image = images.get_image(db, image_id, user)
        ext = FORMATS[image.format][0]
        path = state.image_store.image_path(image.sha256, ext)
        if not path.exists():
            raise NotFound(f"file of image {image_id} is missing on disk")
        return File(
            path, media_type=EXTENSION_TYPES[ext], content_disposition_type="inline", headers=IMMUTABLE
        )

    @get(
        "/{image_id:int}/thumbnail",
        operation_id="getImageThumbnail",
        sync_to_thread=True,
        media_type=THUMBNAIL_MEDIA_TYPE,
    )
    def thumbnail(self, image_id: Id, db: DB, user: Caller, config: Settings, state: State) -> File:
        image = images.get_image(db, image_id, user)
        path = files.ensure_thumbnail(state.image_store, config, image.sha256, image.format)
        return File(
            path, media_type=THUMBNAIL_MEDIA_TYPE, content_disposition_type="inline", headers=IMMUTABLE
        )

    @delete("/{image_id:int}", operation_id="deleteImage", sync_to_thread=True)
    def delete_image(self, image_id: Id, db: DB, user: Caller, state: State) -> None:
        images.delete_image(db, state.image_store, image_id, user)

    @get("/{image_id:int}/annotations", operation_id="getAnnotations", sync_to_thread=True)
    def get_annotations(self, image_id: Id, db: DB, user: Caller) -> AnnotationsRead:
        return boxes.get_annotations(db, image_id, user)

    @put("/{image_id:int}/annotations", operation_id="putAnnotations", sync_to_thread=True)
    def put_annotations(
        self, image_id: Id, data: JSONBody[AnnotationsPut], db: DB, user: Caller
    ) -> AnnotationsRead:
        return boxes.put_annotations(db, image_id, data, user)
