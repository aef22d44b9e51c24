"""The ``portrait`` command: the root Typer app (:mod:`portrait_cli.main`) and the commands that
span several floors (``forget``).

It sits above every package: it registers the commands of ``features``, ``training``,
``serving`` and ``marketing`` on the root app, so ``portrait`` (the foundation) never imports
them.
"""
