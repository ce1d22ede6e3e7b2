"""Stage one's machinery: decoded videos to CLIP batches to store chunks, on one device, one
encoder process per device, or dask workers."""
