"""The `mvideo` command line: one module per subcommand, each with DEFAULT_RECIPE and run(cfg)."""
