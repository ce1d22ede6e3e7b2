"""Search over video embeddings: exact top-k by streamed matmuls, an optional faiss index, and
text -> video retrieval metrics. Embeddings arrive as row chunks, so any source (a Zarr array, a
memory map, a tensor) works and none of this imports zarr."""
