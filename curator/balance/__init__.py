"""Post-curation dataset balancing (Summer-22B 3.7): man/woman subjects to 1:1 under a share cap, and
vocabulary balancing toward a target distribution (MetaCLIP); results are dataset versions (boolean
columns of the `balance` feature set), never deletions."""
