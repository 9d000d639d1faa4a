"""The job runner: one module per MapJob type, doing the real work with GDAL."""
