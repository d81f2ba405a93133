"""One module per ``structalign`` command: ``configure(parser)`` and ``run(args) -> int``; ``options``
holds the options several of them share."""
