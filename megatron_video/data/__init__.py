"""Training data: the Parquet catalog, WebDataset shards, clip decoding and the loader."""
