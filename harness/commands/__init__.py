"""CLI subcommands. Each module registers itself with add_parser(subparsers)
and sets `func` to a handler taking the parsed arguments and returning an
exit code."""
