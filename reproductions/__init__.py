"""The five reproductions, one package each, named everywhere by the paper's catalogue key (tables, logs, ``make
reproduce PAPER=<key>``, ``python -m reproductions <key>``).

The packages keep the reproductions' historical module names, so that ``python -m reproductions.<package>``
works as it did and committed run records (``results/runs/<package>/``) are read back; a record's ``paper``
field is the key. The one mapping from key to package is the catalogue's (:data:`results.catalogue.PAPERS`,
``reproduction``), read by :func:`papers`. Importing this package imports no paper.
"""


def papers() -> dict[str, str]:
    """``{catalogue key: package}`` (``speziali`` -> ``utkface_dual_cnn`` ...), from the catalogue."""
    from results.catalogue import PAPERS

    return {key: meta["reproduction"] for key, meta in PAPERS.items()}
