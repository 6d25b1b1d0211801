"""Image files shared by every domain: type and size checks before decoding, decoding, thumbnails."""
