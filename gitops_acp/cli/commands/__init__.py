"""One module per command, each with `add_parser(subparsers, name, common)` and `run(args) -> int`."""
