"""Datasets, their images and the boxes drawn on them; what other domains may call is re-exported here."""

from appliance.catalog.access import dataset_row, image_row, readable_dataset, writable_dataset
from appliance.catalog.boxes import insert_boxes, insert_new_boxes, replace_boxes
from appliance.catalog.datasets import create_dataset, get_dataset
from appliance.catalog.files import StoredImage, check_pending_files, store_image_file, upsert_image_files
from appliance.catalog.uploads import IncomingFile, add_images

__all__ = [
    "IncomingFile",
    "StoredImage",
    "add_images",
    "check_pending_files",
    "create_dataset",
    "dataset_row",
    "get_dataset",
    "image_row",
    "insert_boxes",
    "insert_new_boxes",
    "readable_dataset",
    "replace_boxes",
    "store_image_file",
    "upsert_image_files",
    "writable_dataset",
]
