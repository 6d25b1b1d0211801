"""Datasets, their images and the boxes drawn on them."""
