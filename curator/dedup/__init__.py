"""Post-curation near-duplicate removal: GPU k-means within three-word-caption buckets, then a cosine
threshold within each cluster; results are catalog feature sets keyed by clip key."""
