"""The versioned contract of mote's Zarr feature store; the only code that knows its layout."""
