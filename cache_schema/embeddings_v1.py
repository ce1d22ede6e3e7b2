"""Schema v1 of the embeddings file (``mote embed``), as data: names, dtype, chunking, columns.

Like ``v1.py`` for the feature store, with no zarr or numpy import, so settings and ``--help``
can name a default (``CHUNK_ROWS``) without loading the reader. ``embeddings.py`` reads and
writes the file by these names; ``docs/store-format.md`` describes it for readers without mote.
"""

from mote.cache_schema import v1

SCHEMA = "mote.embeddings"
VERSION = 1

# float16: a unit vector's components are at most 1 in size, where float16 keeps 11 significant
# bits (a relative error under 5e-4, so a cosine moves by about 1e-3 at most), and half the bytes
# of float32: D=512 is 1 GB per million videos, read from disk or moved to a GPU in one go.
DTYPE = "float16"
CHUNK_ROWS = 16384  # 16 MB of D=512 vectors: a resume redoes at most this many rows
PENDING, DONE = 0, 1
TABLE_FILE = "videos.parquet"
TABLE_COLUMNS = ("row", "store_row", "video_id", "path", "label", "label_name")
NO_LABEL = v1.NO_LABEL  # the label column of a video without a class

# Root attributes that say what made the vectors; a resume must match them all.
IDENTITY_ATTRS = ("run", "store", "clip", "variant", "dim", "n_rows")
ROOT_ATTRS = ("schema", "schema_version", *IDENTITY_ATTRS, "chunk_rows", "dtype", "tool_version")
