"""Edge appliance for object detection: import images, label, train YOLO, export, run a camera."""

__version__ = "0.1.0"
