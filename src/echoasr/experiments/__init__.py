"""``echoasr experiment``: grids of training runs at equal budgets, their statistics and report.

* :mod:`.plans`: the ``quick`` and ``full`` plans and YAML plan files, with their pre-registered
  analysis (primary metric, families, equivalence margin);
* :mod:`.runner`: trains and evaluates every (configuration, seed), resumably, through
  :func:`echoasr.training.train` and :func:`echoasr.evaluation.evaluate`;
* :mod:`.stats`: inference over training runs (paired t over seeds, crossed seeds x utterances
  variance components), Holm, TOST, MDE; the utterance bootstrap (descriptive);
* :mod:`.report`: ``results.json``, ``report.md``, ``utterances.tsv.gz``, and re-analysis of a
  report from its results; :mod:`.plots`: the report's figures;
* :mod:`.manipulation`: f0 replaced at test time (shuffled, median), the manipulation check.
"""
