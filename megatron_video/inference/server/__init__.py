"""The generation server: HTTP front end, SQLite job table, sampling worker."""
