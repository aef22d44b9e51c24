"""``python -m portrait_cli``: the ``portrait`` command."""

from portrait_cli.main import main

main()
