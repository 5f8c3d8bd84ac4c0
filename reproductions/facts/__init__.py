"""Every published cell that needs no training, computed from the real data and the model builders (issue 16).

::

    python -m reproductions.facts --data-root ../shared/data     # or: make facts
    python -m reproductions.facts --papers jorgensen,sundriyal   # a subset

One module per paper (:mod:`~reproductions.facts.speziali`, :mod:`~reproductions.facts.jorgensen`,
:mod:`~reproductions.facts.gu_yang`, :mod:`~reproductions.facts.dey_aggarwal`,
:mod:`~reproductions.facts.sundriyal`) computes its cells: dataset counts, split sizes and
distributions from the real files under ``--data-root`` (UTKFace, the Adience fold files, the
WIKI label file, the CelebA partition and attribute files, the CORAL lists), and layer sizes and
parameter counts from the Keras builds (no weights, no images). Each writes run records under
``results/runs/facts/<paper>_<source>/facts/record.json`` with data kind ``real`` (computed from
the data) or ``none`` (read off a model build, or a configuration value); then the tables and
``results/README.md`` are regenerated (``--no-tables`` skips that).

Conventions (issue 16):

- A cell is *reproduced* only when it is computed from data or read off a built model. A cell that
  merely echoes a configuration constant (a learning rate, a batch size, the pipeline's resize) is
  written with ``"setting": true``: the tables show it as a setting, without Δ, never counted as
  reproduced.
- Every cell is judged after it is computed (:func:`reproductions.facts.common.judge`): ``exact``
  at the printed precision or ``differs`` with its reason in the note. No published number enters a
  computation; a difference is reported, never tuned away.
- Records name the data by dataset, a path relative to the data root and a fingerprint
  (:func:`agegender.data.provenance.describe_data`), never an absolute path; figures
  (``results/figures/facts/``) are named relative to ``results/``.
- Rerunning changes nothing: each record has a fixed run id and is left untouched when its cells,
  metrics and figures are unchanged (figures are written without version metadata).

On 2 CPU cores the whole command takes about 2-3 minutes, most of it building Xception,
ResNet-50 and SE-ResNet-50 and hashing nothing (the data fingerprints read file names and sizes only).
"""
