"""The end-to-end demo: real footage -> curation -> shards -> training -> a sample and a report."""
