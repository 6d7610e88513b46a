"""Training on mmengine's Runner: ``thkit train RECIPE`` (see :mod:`thkit.engine.runner`).

Importing this package stays light (the ``thkit train`` command is in :mod:`thkit.cli.train`): nothing here
imports mmengine's Runner.  The registered engine parts (training model, optimiser
wrappers, sampler, loop, hooks) live in :mod:`thkit.engine.components`, which the engine registries of
:mod:`thkit.registry` import on first use and :func:`thkit.engine.runner.build_runner` imports up front.
"""
