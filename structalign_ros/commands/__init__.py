"""One module per ``structalign`` command: ``configure(parser)`` and ``run(args) -> int``."""
