"""Find a catalogue cell's number in the paper's own text, next to its row and column labels.

Used by ``tests/test_published.py`` so that the catalogue (``results/published/*.csv``) is checked
against the papers (``../shared/papers/*.txt``), not against a second copy of its numbers.

How a cell is looked for (:func:`locate`), most specific first:

``cell``
    ``Table N`` cells (and Speziali's unnumbered tables, named by their top-left header): the
    table is the block of tab-separated lines next to its caption (each caption takes the nearest
    block not taken by an earlier caption). The row is the line whose label fields hold every
    word of the row label (``Convolution 2`` is the second line holding "Convolution"); the column
    is the header field (header lines joined, group labels carried right) holding the column
    label's words; a compound field is split (``7 × 7 × 3`` into height/width/depth,
    ``84.8 ± 1.1`` into the value and ``std``). The number printed there must equal the catalogue's.
``row``
    the row line is found but the column is not (e.g. Table 1's ``Rate = 0.5`` sits in a label
    field): the number must be one printed on that line.
``text``
    ``Section X`` cells (numbers in running text) and table cells whose row is not found: the
    number must be printed in the section (or the text around the table) within
    :data:`WINDOW` characters (:data:`SMALL_WINDOW` for a one-digit integer) of a word of the row or
    column label.

``None``: not located. A located table field whose number differs is a *mismatch*, reported as such.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

WINDOW = 220  # characters either side of a number within which a label word must appear (text level)
SMALL_WINDOW = 60  # the same for a one-digit integer, which a long passage holds by chance
STOPWORDS = {"with", "from", "that", "this", "each", "after", "over", "only", "model", "models", "value", "values",
             "size", "task", "rate", "time", "paper", "table", "both", "than", "share", "last"}
COMPONENTS = {"height": 0, "width": 1, "depth": 2, "channels": 2, "min": 0, "max": 1, "std": 1}


# ------------------------------------------------------------------------------------------- numbers


_SCI = re.compile(r"(\d+(?:\.\d+)?)\s*(?:×|x|\\times)\s*10\s*\^\s*\{?\s*([-−]?\d+)\s*\}?")
_POW = re.compile(r"(?<![\d.])10\s*\^\s*\{?\s*([-−]?\d+)\s*\}?")
_NUM = re.compile(r"(?<![\d.])(\d{1,3}(?:(?:,| )\d{3})+|\d+)(\.\d+)?(?![\d])")


def numbers(text: str) -> list[tuple[float, int]]:
    """Every number printed in ``text`` as ``(value, position)``: plain and decimal numbers, thousands
    grouped by commas or spaces (the grouped value and, in case the spaces only separate numbers, each
    group alone), and powers of ten (``3×10^{-5}``, ``10^{-7}``)."""
    out = []
    taken = []
    for pattern, convert in ((_SCI, lambda m: float(m.group(1)) * 10.0 ** int(m.group(2).replace("−", "-"))),
                             (_POW, lambda m: 10.0 ** int(m.group(1).replace("−", "-")))):
        for m in pattern.finditer(text):
            if any(a <= m.start() < b for a, b in taken):
                continue
            out.append((convert(m), m.start()))
            taken.append((m.start(), m.end()))
    for m in _NUM.finditer(text):
        if any(a <= m.start() < b for a, b in taken):
            continue
        whole, frac = m.group(1), m.group(2) or ""
        out.append((float(whole.replace(",", "").replace(" ", "") + frac), m.start()))
        if " " in whole or "," in whole:
            parts = re.split(r"[ ,]", whole)
            pos = m.start()
            for i, part in enumerate(parts):
                out.append((float(part + (frac if i == len(parts) - 1 else "")), pos))
                pos += len(part) + 1
    return out


_WORDS = {w: i for i, w in enumerate(("zero one two three four five six seven eight nine ten eleven twelve").split())}
_WORD = re.compile(r"\b(" + "|".join(_WORDS) + r")\b", re.IGNORECASE)


def number_words(text: str) -> list[tuple[float, int]]:
    """Numbers written as words (``five folds``), as ``(value, position)``."""
    return [(float(_WORDS[m.group(1).lower()]), m.start()) for m in _WORD.finditer(text)]


def same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


# ------------------------------------------------------------------------------------------- words


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z][a-z0-9]*", text.lower().replace("-", " ").replace("_", " "))]


def label_words(label: str) -> list[str]:
    """The content words of a row or column label (no numbers, no stopwords)."""
    return [w for w in _words(label) if len(w) >= 3 and w not in STOPWORDS]


def _matches(word: str, candidate: str) -> bool:
    """``word`` (from a label) matches ``candidate`` (from the text) when they share the label word's first
    five letters (or all of a shorter one): ``images``/``image``, ``converges``/``convergence``."""
    if len(word) < 5:
        return candidate == word or (len(word) >= 3 and candidate.startswith(word))
    return candidate[:5] == word[:5]


def holds_words(words: list[str], text: str) -> bool:
    have = _words(text)
    return all(any(_matches(w, h) for h in have) for w in words)


# ------------------------------------------------------------------------------------------- paper text


class Paper:
    """One paper's text, split into lines, table blocks, captions and sections."""

    def __init__(self, path: Path):
        self.text = path.read_text(encoding="utf-8")
        self.lines = self.text.split("\n")
        self.blocks = self._blocks()
        self.captions = self._captions()

    def _blocks(self) -> list[tuple[int, int]]:
        blocks, start = [], None
        for i, line in enumerate(self.lines + [""]):
            if "\t" in line and start is None:
                start = i
            elif "\t" not in line and start is not None:
                blocks.append((start, i - 1))
                start = None
        return blocks

    def _captions(self) -> dict[str, tuple[int, int]]:
        """``{"Table 2": block}``: each caption takes the nearest block within 8 lines that no earlier
        caption took (ties: the block above)."""
        out, taken = {}, set()
        for i, line in enumerate(self.lines):
            m = re.match(r"^(Table \d+(?:\.\d+)?)[:.]", line)
            if not m:
                continue
            best = None
            for block in self.blocks:
                if block in taken:
                    continue
                distance = i - block[1] if block[1] < i else block[0] - i
                if 0 < distance <= 8 and (best is None or distance < best[0]):
                    best = (distance, block)
            if best is not None:
                out[m.group(1)] = best[1]
                taken.add(best[1])
        for block in self.blocks:  # Speziali: unnumbered tables named by their top-left header cell
            name = self.lines[block[0]].split("\t")[0].strip()
            if name and block not in taken:
                out.setdefault(name, block)
        return out

    def section(self, name: str) -> str | None:
        """The text of ``Section 3.4`` / ``Section III-A`` up to the next heading."""
        key = name.replace("Section ", "").strip()
        heading = re.compile(r"^(?:#+\s*)?(?:\d+(?:\.\d+)*\.?|[IVX]+\.|[A-Z]\.)\s+[A-Z]")
        start = None
        roman = re.match(r"^([IVX]+)-([A-Z])$", key)
        for i, line in enumerate(self.lines):
            if "\t" in line:
                continue
            if roman:
                if re.match(rf"^{roman.group(1)}\.\s", line):
                    start = ("part", i)
                elif start and start[0] == "part" and re.match(rf"^{roman.group(2)}\.\s", line):
                    start = i
                    break
            elif re.match(rf"^(?:#+\s*)?{re.escape(key)}\.?\s+\S", line):
                start = i
                break
        if not isinstance(start, int):
            return None
        end = len(self.lines)
        for j in range(start + 1, len(self.lines)):
            line = self.lines[j]
            if "\t" in line or not heading.match(line) or line.startswith("Table"):
                continue
            number = re.match(r"^(?:#+\s*)?(\d+(?:\.\d+)*)", line)
            if roman is None and number and number.group(1).startswith(key + "."):
                continue  # a subsection belongs to its section
            end = j
            break
        return "\n".join(self.lines[start:end])

    def around(self, block: tuple[int, int], lines: int = 12) -> str:
        return "\n".join(self.lines[max(0, block[0] - lines):block[1] + lines + 1])


def _fields(line: str) -> list[str]:
    return [f.strip() for f in line.split("\t")]


def _is_data(fields: list[str]) -> bool:
    """A data row has a field that is a number (or a compound of numbers) or the '-' / '*' of a blank cell, or
    a label and nothing else (a table printed blank)."""
    if fields[0] and len(fields) > 1 and not any(fields[1:]):
        return True
    return any(re.fullmatch(r"[\d\s.,±×x$\\timespm{}^\-−*%]+", f) and re.search(r"\d|^[-*]$", f)
               for f in fields[1:])


def _header_lines(lines: list[str]) -> set[int]:
    """The header lines of a table block: the lines before its first data row, and any later line that starts
    like the first of them (a second header inside one table, as in Sundriyal's Table 4.2). Other lines
    without numbers (``Optimiser  Adam``) are rows."""
    first = next((i for i, line in enumerate(lines) if _is_data(_fields(line))), len(lines))
    out = set(range(first))
    if first:
        lead = _fields(lines[0])[0]
        out |= {i for i in range(first, len(lines)) if lead and _fields(lines[i])[0] == lead
                and not _is_data(_fields(lines[i]))}
    return out


def _header(lines: list[str], row_index: int) -> list[str]:
    """The column labels in force at ``row_index``: the nearest header lines above it, joined per field, a
    group label (``Loss``) carried right over the empty fields after it."""
    heads = _header_lines(lines)
    headers = []
    j = row_index - 1
    while j >= 0 and j not in heads:  # the rows above, up to the header lines in force
        j -= 1
    while j >= 0 and j in heads:
        headers.insert(0, _fields(lines[j]))
        j -= 1
    width = max((len(h) for h in headers), default=0)
    joined = [""] * width
    for h in headers:
        carried = ""
        for k in range(width):
            field = h[k] if k < len(h) else ""
            if field:
                carried = field
            elif len(headers) > 1 and k > 0:
                field = carried
            joined[k] = (joined[k] + " " + field).strip()
    return joined


def _components(field: str) -> list[float]:
    """The numbers of a table field in printed order (``$7 \\times 7 \\times 3$`` -> 7, 7, 3)."""
    if re.search(r"\d\s*(?:×|x|\\times)\s*10\s*\^", field):
        return [v for v, _ in numbers(field)][:1]
    parts = re.split(r"\s*(?:×|\\times|±|\\pm)\s*|(?<=\d)x(?=\d)", field.replace("$", ""))
    out = []
    for part in parts:
        found = numbers(part)
        if found:
            out.append(found[0][0])
    return out


def _split_label(column: str) -> tuple[str, int | None]:
    words = column.split()
    if words and words[-1] in COMPONENTS:
        return " ".join(words[:-1]), COMPONENTS[words[-1]]
    return column, None


def locate(paper: Paper, table: str, row: str, column: str, value: float | None, marker: str | None = None):
    """``(level, detail)``: level ``cell``, ``row``, ``text``, ``mismatch`` or ``None``. ``value`` is the
    catalogue's number (None for a marker: ``not published`` is then looked for as '-', '*' or blank)."""
    block = paper.captions.get(table)
    if block is not None:
        found = _in_block(paper, block, row, column, value, marker, table)
        if found[0] is not None:
            return found
        if value is None:
            return found
        return _in_text(paper.around(block), row, column, value)
    if table.startswith("Section") and value is not None:
        region = paper.section(table)
        if region is None:
            return None, f"section {table} not found"
        return _in_text(region, row, column, value)
    return None, f"{table} not found in the text"


def _in_block(paper: Paper, block, row: str, column: str, value, marker, table: str = ""):
    lines = paper.lines[block[0]:block[1] + 1]
    def plain(text):
        return re.sub(r"\s+", " ", re.sub(r"[*_{}$\\]", "", text)).strip().lower()

    heads = _header_lines(lines)
    data_rows = [i for i in range(len(lines)) if i not in heads]
    hits = [i for i in data_rows if plain(_fields(lines[i])[0]) == plain(row)]  # the first field, as printed
    ordinal = 1
    if not hits:
        base_row = re.sub(r"\s+\d+$", "", row)
        ordinal = int(row.rsplit(" ", 1)[1]) if base_row != row else 1
        want = label_words(base_row) or _words(base_row)
        for i in data_rows:
            fields = _fields(lines[i])
            label = " ".join(f for f in fields if not re.search(r"^\$?\d", f))
            if want and holds_words(want, label):
                hits.append(i)
    if len(hits) < ordinal:
        return None, f"row {row!r} not in {block}"
    i = hits[ordinal - 1]
    fields = _fields(lines[i])
    header = _header(lines, i)
    base_column, component = _split_label(column)
    col_words = label_words(base_column) or _words(base_column)
    exact = [k for k, h in enumerate(header) if k and h.lower() == base_column.lower()]
    candidates = exact or [k for k, h in enumerate(header) if k and h and holds_words(col_words, h)]
    if len(candidates) > 1:  # the field whose label has the fewest other words
        candidates.sort(key=lambda k: len(_words(header[k])))
    if candidates and candidates[0] < len(fields):
        field = fields[candidates[0]]
        if value is None:
            blank = field in ("", "-", "*", "–")
            return ("cell" if blank and marker == "not published" else "mismatch"), f"{table}/{row}/{column}: {field!r}"
        parts = _components(field)
        if component is None and column.split()[-1:] != ["std"] and parts:
            got = parts[0]
        elif component is not None and len(parts) > component:
            got = parts[component]
        elif component == COMPONENTS["channels"] and len(parts) == 1:
            got = None
        else:
            got = parts[0] if len(parts) == 1 and component in (0, None) else None
        if got is not None:
            if same(got, value):
                return "cell", f"{table}/{row}/{column}: {field!r}"
            return "mismatch", f"{table}/{row}/{column}: printed {field!r}, catalogue {value:g}"
    if value is None:
        return None, f"column {column!r} not in the header {header}"
    if any(same(v, value) for v, _ in numbers(lines[i])):
        return "row", f"{table}/{row}: {lines[i]!r}"
    return None, f"{value:g} not on the row line {lines[i]!r}"


def _in_text(text: str, row: str, column: str, value: float):
    words = list(dict.fromkeys(label_words(row) + label_words(column)))
    positions = [pos for v, pos in numbers(text) + number_words(text) if same(v, value)]
    if not positions:
        return None, f"{value:g} not printed in the text"
    reach = SMALL_WINDOW if abs(value) < 10 and float(value).is_integer() else WINDOW
    for pos in positions:
        window = text[max(0, pos - reach):pos + reach]
        near = [w for w in words if holds_words([w], window)]
        if near:
            return "text", f"{value:g} near {near}: ...{text[max(0, pos - 60):pos + 60]!r}..."
    return None, f"{value:g} printed, but no word of {words} within {reach} characters"
