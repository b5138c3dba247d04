"""vlmaudit: audit image-text webdataset shards for the 75 UnsafeConcepts."""

__version__ = "0.1.0"
