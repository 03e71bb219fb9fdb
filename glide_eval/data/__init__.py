"""Data sets read by the application: MS-COCO captions and reference images (`coco`)."""
