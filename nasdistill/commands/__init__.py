"""Sub-commands of the `nasdistill` CLI: each module has HELP, add_arguments(parser), run(args)."""
