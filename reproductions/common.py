"""What the five reproduction packages share above the library: their README as their docstring.

Each package ``reproductions/<module>/`` keeps the decisions and ambiguities that explain its code
in ``README.md`` beside its ``__init__.py``; :func:`readme_doc` makes that file the package's
``__doc__``, so ``python -m pydoc reproductions.<module>`` shows it and there is one text, not two.
"""

from __future__ import annotations

from pathlib import Path


def readme_doc(init_file: str, fallback: str | None) -> str | None:
    """The text of ``README.md`` next to ``init_file`` (a package's ``__init__.py``); ``fallback`` if absent."""
    try:
        return (Path(init_file).parent / "README.md").read_text(encoding="utf-8")
    except OSError:  # an installation without the README (package data not shipped)
        return fallback


class PaperReproduction:
    """Mixed into each paper's :class:`agegender.experiment.Reproduction`: the application's side of the runner,
    which the library may not import, namely the table generator (``results.tables``) and the published values."""

    def tables(self, paths: dict) -> dict:
        """Regenerate every table and the index from the run records under ``paths["runs"]``."""
        from results.tables import generate

        return generate(paths["runs"], paths["tables"], paths["readme"])

    def side_by_side(self, cells: list[dict]) -> str:
        """This run's reproduced cells next to the published values, one line each."""
        from results.tables import format_cells

        return format_cells(cells, self.key)

    def published(self):
        """The paper's published values (``results/published/<key>.csv``) as a frame."""
        from results.catalogue import load_published

        return load_published(self.key)
