"""``echoasr experiment``: grids of training runs at equal budgets, their statistics and report.

* :mod:`.plans`: the ``quick`` and ``full`` plans and YAML plan files;
* :mod:`.runner`: trains and evaluates every (configuration, seed), resumably, through
  :func:`echoasr.training.train` and :func:`echoasr.evaluation.evaluate`;
* :mod:`.stats`: confidence intervals over seeds and the paired bootstrap over utterances;
* :mod:`.report`: ``results.json`` and ``report.md``; :mod:`.plots`: the report's figures.
"""
