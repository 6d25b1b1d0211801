"""Import and export of image sets: USB folders and uploaded archives in YOLO, COCO, Pascal VOC or plain images."""
