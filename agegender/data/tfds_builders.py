"""TensorFlow Datasets builders that prepare the four face datasets once from the user's own files.

Importing this module registers four ``tfds.core.GeneratorBasedBuilder`` classes, one per
dataset. None downloads anything: each reads the files the user already has, given as
``manual_dir``, with the project's reader, and writes TFRecord shards once::

    import tensorflow_datasets as tfds
    import agegender.data.tfds_builders  # registers the builders

    config = tfds.download.DownloadConfig(manual_dir="~/data/UTKFace")
    ds = tfds.load("utk_face", data_dir="~/tfds", download_and_prepare_kwargs={"download_config": config})

===============  ==========  ============================================================
builder          dataset     extra features
===============  ==========  ============================================================
utk_face         UTKFace     (none)
adience_faces    Adience     ``fold`` (0-4), ``age_label`` (the fold file's raw age text)
celeb_a_faces    CelebA      ``partition`` (train/val/test/""), ``attributes`` (all 40, 0/1)
imdb_wiki_faces  IMDB-WIKI   ``face_score`` (float32; -inf: no face found), ``subset``
===============  ==========  ============================================================

The names avoid TFDS's own catalogue (it ships ``celeb_a``, which downloads the data itself).

Protocol of every builder:

1. ``dl_manager.manual_dir`` must exist and hold the files named in
   ``MANUAL_DOWNLOAD_INSTRUCTIONS``; otherwise a :class:`~agegender.errors.DataError` names the
   folder, what was expected and the fix.
2. The dataset's reader (``read_utkface``, ``read_adience``, ``read_celeba`` with all 40
   attributes, ``read_imdb_wiki``, each with its default options) reads the labels, so every
   rule of the readers holds: malformed names, NaN labels, HTML label files are skipped or
   rejected exactly as there. :func:`agegender.data.images.check_images` then skips images
   that are missing, empty, HTML pages, truncated or decompression bombs; a file listed twice
   keeps its first row.
3. Every skipped item is written to ``skipped.json`` in the prepared folder
   (``<data_dir>/<name>/<version>/``) as ``{file, reason, stage}`` (``stage`` is ``labels``
   for the reader's skips and ``image`` for :func:`check_images`), the reader's notes and
   counts to ``prepared.json``, and one summary line is printed to stderr. The synth marker
   (``agegender-synth.json``) of a generated ``manual_dir`` is copied there too, so
   ``agegender.data.provenance`` still calls the data generated.
4. Examples are yielded lazily, one file at a time, keyed by ``file``. TFDS's writer buffers
   serialized examples in memory up to 1 GB before spilling to temporary buckets; these builders
   lower that buffer to :attr:`SHUFFLE_MEMORY_BYTES` (64 MiB) while they prepare, so memory stays
   flat however large the dataset.

Features (all builders):

- ``image``: ``tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg")``. Given a
  path, TFDS 4.9 stores ``epath.Path(path).read_bytes()`` unchanged: no decode, no re-encode, no
  validation (only a numpy array or a PIL image is encoded). The builders pass the path, so the
  record holds the original file's bytes (a PNG named ``.jpg`` stays PNG bytes; TFDS decodes
  with ``tf.image.decode_image``, which reads either, converting grayscale to 3 channels).
- ``file`` (text, the example key): the path relative to the dataset root, as ``Samples.file``.
- ``order`` (int64): the row's position in the reader's table, so the reading side restores the
  reader's order (a seeded split then gives the same partition as on the raw folder).
- ``age`` (float32): years; **-1 when unknown** (Adience, CelebA give none). TFDS would store
  NaN, but -1 matches the other labels and cannot turn a loss into NaN;
  :func:`agegender.data.prepared.read_prepared` gives NaN again. ``age_group``, ``gender``,
  ``race`` (int64): as in :mod:`agegender.data.samples`, -1 unknown. ``group``
  (text): subject / identity id.

Splits: one ``train`` split holding every usable example, for every builder. The project's
split protocols (:mod:`agegender.data.splits`) split it later. CelebA's official
train/val/test partition is kept as the ``partition`` feature rather than as TFDS splits: extra
splits would store every image twice, and a ``train`` that contains the official ``test``
images next to a ``test`` split would break the TFDS convention that splits are disjoint. Filter
on ``partition`` (or use the ``celeba`` protocol) for the official partition.

What is not checked: an image whose header parses but whose data is corrupt is stored as is;
decoders downstream must tolerate it (``build_dataset`` does).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from agegender.data.provenance import SYNTH_MARKER
from agegender.errors import DataError

__all__ = ["BUILDERS", "SHUFFLE_MEMORY_BYTES", "SKIPPED_FILE", "REPORT_FILE"]

SHUFFLE_MEMORY_BYTES = 64 << 20
SKIPPED_FILE = "skipped.json"
REPORT_FILE = "prepared.json"


class _FaceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """What the four builders share; a subclass sets ``SOURCE`` and its extra features.

    ``EXTRAS`` names a builder's flat extra features: ``{column: (kind, doc)}`` with kind
    ``int64``, ``float32`` or ``text``; the feature, the example value and the decoded column all
    follow from it. A nested feature (CelebA's attributes) extends the three methods below.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version: the reader's labels, original image bytes, one 'train' split."}
    SOURCE = ""
    HOMEPAGE = ""
    CITATION = ""
    DESCRIPTION = ""
    EXTRAS: dict[str, tuple[str, str]] = {}

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        # TFDS 4.9's own lookup needs the importlib_resources backport, absent on Python >= 3.9
        from etils import epath

        return epath.Path(__file__)

    def _extra_features(self) -> dict:
        return {name: tfds.features.Text(doc=doc) if kind == "text" else tfds.features.Scalar(np.dtype(kind), doc=doc)
                for name, (kind, doc) in self.EXTRAS.items()}

    def _extras(self, row) -> dict:
        convert = {"text": str, "int64": int, "float32": float}
        return {name: convert[kind](row[name]) for name, (kind, _) in self.EXTRAS.items()}

    def _info(self) -> tfds.core.DatasetInfo:
        f = tfds.features
        features = {
            "image": f.Image(shape=(None, None, 3), encoding_format="jpeg",
                             doc="the original image file's bytes (not re-encoded)"),
            "file": f.Text(doc="path relative to the dataset root (the example key)"),
            "order": f.Scalar(np.int64, doc="position of the row in the reader's table"),
            "age": f.Scalar(np.float32, doc="age in years; -1 when unknown"),
            "age_group": f.Scalar(np.int64, doc="Adience 8-group index; -1 when not applicable"),
            "gender": f.Scalar(np.int64, doc="0 male, 1 female; -1 unknown"),
            "race": f.Scalar(np.int64, doc="0 white, 1 black, 2 asian, 3 indian, 4 others; -1 unknown"),
            "group": f.Text(doc="subject / identity id for subject-exclusive splits"),
            **self._extra_features(),
        }
        return self.dataset_info_from_configs(
            description=self.DESCRIPTION + "\n\nPrepared by agegender.data.tfds_builders from the files in "
                                           "manual_dir; one 'train' split holds every usable example.",
            features=f.FeaturesDict(features), homepage=self.HOMEPAGE, citation=self.CITATION)

    def _download_and_prepare(self, dl_manager, download_config):
        from tensorflow_datasets.core import shuffle

        saved = shuffle.MAX_MEM_BUFFER_SIZE
        shuffle.MAX_MEM_BUFFER_SIZE = min(saved, SHUFFLE_MEMORY_BYTES)
        try:
            super()._download_and_prepare(dl_manager, download_config)
        finally:
            shuffle.MAX_MEM_BUFFER_SIZE = saved

    def _manual_root(self, dl_manager) -> Path:
        expected = self.MANUAL_DOWNLOAD_INSTRUCTIONS.strip().splitlines()[0]
        try:
            return Path(dl_manager.manual_dir)
        except AssertionError:
            where = getattr(dl_manager, "_manual_dir", None)
            state = "not set" if where is None else ("empty" if Path(where).is_dir() else "missing")
            raise DataError(f"the manual_dir of {self.name} is {state}", path=where,
                            fix=f"{expected} Pass that folder as manual_dir (python -m agegender.data prepare "
                                f"{self.SOURCE} --data-dir FOLDER --tfds-dir OUT)") from None

    def _split_generators(self, dl_manager):
        from agegender.data.audit import read_dataset
        from agegender.data.images import check_images

        root = self._manual_root(dl_manager)
        samples = read_dataset(self.SOURCE, root, **self._reader_options())
        frame = samples.frame.reset_index(drop=True)
        frame["order"] = np.arange(len(frame), dtype="int64")
        skipped = [dict(item, stage="labels") for item in samples.skipped]
        first = ~frame["file"].duplicated(keep="first")
        for rel in frame.loc[~first, "file"]:
            skipped.append({"file": rel, "reason": "listed again in the labels (first row kept)", "stage": "labels"})
        frame = frame[first.to_numpy()].reset_index(drop=True)
        checked = check_images(frame["path"]) if len(frame) else None
        if checked is not None:
            rel_of = dict(zip(frame["path"], frame["file"]))
            skipped += [{"file": rel_of.get(item["file"], item["file"]), "reason": item["reason"], "stage": "image"}
                        for item in checked.skipped]
            frame = frame[checked.ok].reset_index(drop=True)
        if not len(frame):
            raise DataError(f"no usable images for {self.name} ({len(skipped)} skipped; first: "
                            f"{skipped[0]['file'] + ': ' + skipped[0]['reason'] if skipped else 'none'})",
                            path=root, fix=self.MANUAL_DOWNLOAD_INSTRUCTIONS.strip().splitlines()[0])
        self._write_reports(root, samples, skipped, len(frame))
        return {"train": self._generate_examples(frame)}

    def _reader_options(self) -> dict:
        return {}

    def _write_reports(self, root: Path, samples, skipped: list[dict], examples: int) -> None:
        out = Path(self.data_dir)  # the temporary folder TFDS renames on success
        out.mkdir(parents=True, exist_ok=True)
        (out / SKIPPED_FILE).write_text(json.dumps(skipped, indent=1) + "\n", encoding="utf-8")
        report = {"dataset": self.SOURCE, "name": self.name, "version": str(self.version), "manual_dir": str(root),
                  "files_seen": samples.files_seen, "examples": examples, "skipped": len(skipped),
                  "repaired": samples.repaired, "duplicate_rows": samples.duplicate_rows,
                  "missing_images": len(samples.missing), "notes": samples.notes}
        (out / REPORT_FILE).write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
        if (root / SYNTH_MARKER).is_file():
            shutil.copyfile(root / SYNTH_MARKER, out / SYNTH_MARKER)
        self._summary = (examples, skipped, root)

    def _post_download_and_prepare_hook(self) -> None:
        examples, skipped, root = getattr(self, "_summary", (None, [], None))
        if examples is None:
            return
        reasons: dict[str, int] = {}
        for item in skipped:
            key = item["reason"].split(" (")[0]
            reasons[key] = reasons.get(key, 0) + 1
        top = "; ".join(f"{n} {r}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
        print(f"{self.name}: prepared {examples:,} examples from {root} into {self.data_dir}; skipped "
              f"{len(skipped):,}" + (f" ({top}); list in {Path(self.data_dir) / SKIPPED_FILE}" if skipped else ""),
              file=sys.stderr, flush=True)

    def _generate_examples(self, frame):
        for start in range(0, len(frame), 1024):  # row dicts for one chunk at a time
            for row in frame.iloc[start:start + 1024].to_dict("records"):
                age = float(row["age"])
                yield row["file"], {
                    "image": row["path"], "file": row["file"], "order": int(row["order"]),
                    "age": age if math.isfinite(age) else -1.0, "age_group": int(row["age_group"]),
                    "gender": int(row["gender"]), "race": int(row["race"]), "group": str(row["group"]),
                    **self._extras(row)}

    @classmethod
    def columns(cls, batch: dict) -> dict:
        """Frame columns (reader names and dtypes) of the extra features in a decoded numpy batch."""
        reader_dtype = {"int64": "int64", "float32": "float64"}
        return {name: _text(batch[name]) if kind == "text" else batch[name].astype(reader_dtype[kind])
                for name, (kind, _) in cls.EXTRAS.items()}


class UtkFace(_FaceBuilder):
    """UTKFace (aligned & cropped or in-the-wild), labels from the file names."""

    name = "utk_face"
    SOURCE = "utkface"
    HOMEPAGE = "https://susanqq.github.io/UTKFace/"
    DESCRIPTION = "UTKFace: 23,708 faces labelled with age (1-116), gender and race in the file names."
    CITATION = """@inproceedings{zhifei2017cvpr,
  title={Age Progression/Regression by Conditional Adversarial Autoencoder},
  author={Zhang, Zhifei and Song, Yang and Qi, Hairong},
  booktitle={CVPR}, year={2017}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
manual_dir must hold the UTKFace images, named age_gender_race_timestamp.jpg.chip.jpg.
Download UTKFace.tar.gz ("Aligned&Cropped Faces") from https://susanqq.github.io/UTKFace/ and
extract it: manual_dir is the extracted UTKFace/ folder or any parent of it (it is searched
recursively). The in-the-wild part1/, part2/, part3/ folders (age_gender_race_timestamp.jpg)
are accepted too; when both layouts are present the one with more files is read.
"""


class AdienceFaces(_FaceBuilder):
    """Adience: the five official fold files and the aligned faces."""

    name = "adience_faces"
    SOURCE = "adience"
    HOMEPAGE = "https://talhassner.github.io/home/projects/Adience/Adience-data.html"
    DESCRIPTION = ("Adience: unfiltered Flickr faces with 8 age groups and gender, in five subject-exclusive "
                   "folds (the 'fold' feature).")
    CITATION = """@article{eidinger2014age,
  title={Age and Gender Estimation of Unfiltered Faces},
  author={Eidinger, Eran and Enbar, Roee and Hassner, Tal},
  journal={IEEE Transactions on Information Forensics and Security}, year={2014}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
manual_dir must hold fold_0_data.txt ... fold_4_data.txt and the aligned/ folder.
From the Adience page (https://talhassner.github.io/home/projects/Adience/Adience-data.html,
after the request form; the files are in its faces/ folder) download fold_0_data.txt ...
fold_4_data.txt and aligned.tar.gz, and extract aligned.tar.gz next to them, giving
manual_dir/aligned/<user_id>/landmark_aligned_face.<face_id>.<original_image>.
"""
    EXTRAS = {"fold": ("int64", "official fold 0-4"), "age_label": ("text", "the age text of the fold file")}


class CelebAFaces(_FaceBuilder):
    """CelebA: aligned faces, the 40 attributes, the official partition and the identities."""

    name = "celeb_a_faces"
    SOURCE = "celeba"
    HOMEPAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
    DESCRIPTION = ("CelebA: 202,599 aligned celebrity faces with 40 binary attributes (gender from 'Male'), the "
                   "official train/val/test partition (the 'partition' feature; all rows are in 'train') and "
                   "identities (the 'group' feature).")
    CITATION = """@inproceedings{liu2015faceattributes,
  title={Deep Learning Face Attributes in the Wild},
  author={Liu, Ziwei and Luo, Ping and Wang, Xiaogang and Tang, Xiaoou},
  booktitle={ICCV}, year={2015}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
manual_dir must hold img_align_celeba/, list_attr_celeba.txt and list_eval_partition.txt (identity_CelebA.txt optional).
From the CelebA page (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, Google Drive or Baidu)
download Img/img_align_celeba.zip (extract it to manual_dir/img_align_celeba/000001.jpg ...),
Anno/list_attr_celeba.txt, Eval/list_eval_partition.txt and, for identity-exclusive splits,
Anno/identity_CelebA.txt, all directly in manual_dir. If Drive says the download quota is
exceeded, it serves an HTML page instead: the reader rejects it; download again later.
"""

    EXTRAS = {"partition": ("text", "official partition: train, val, test or '' when unlisted")}

    def _reader_options(self) -> dict:
        from agegender.data.celeba import ATTRIBUTES as CELEBA_ATTRIBUTES

        return {"attributes": CELEBA_ATTRIBUTES}

    def _extra_features(self) -> dict:
        from agegender.data.celeba import ATTRIBUTES as CELEBA_ATTRIBUTES

        return {**super()._extra_features(), "attributes": tfds.features.FeaturesDict(
            {a: tfds.features.Scalar(np.int64, doc="1 present, 0 absent") for a in CELEBA_ATTRIBUTES})}

    def _extras(self, row) -> dict:
        from agegender.data.celeba import ATTRIBUTES as CELEBA_ATTRIBUTES

        return {**super()._extras(row), "attributes": {a: int(row[a]) for a in CELEBA_ATTRIBUTES}}

    @classmethod
    def columns(cls, batch: dict) -> dict:
        from agegender.data.celeba import ATTRIBUTES as CELEBA_ATTRIBUTES

        return {**super().columns(batch), **{a: batch["attributes"][a].astype("int64") for a in CELEBA_ATTRIBUTES}}


class ImdbWikiFaces(_FaceBuilder):
    """IMDB-WIKI: the face crops and their imdb.mat / wiki.mat metadata."""

    name = "imdb_wiki_faces"
    SOURCE = "imdb_wiki"
    HOMEPAGE = "https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/"
    DESCRIPTION = ("IMDB-WIKI: celebrity face crops with age (photo year minus birth year) and gender; "
                   "'face_score' is the detector's score (-inf: no face found).")
    CITATION = """@article{rothe2018dex,
  title={Deep expectation of real and apparent age from a single image without facial landmarks},
  author={Rothe, Rasmus and Timofte, Radu and Van Gool, Luc},
  journal={International Journal of Computer Vision}, year={2018}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
manual_dir must hold imdb_crop/imdb.mat and imdb_crop/00 ... 99/, and/or wiki_crop/wiki.mat and wiki_crop/00 ... 99/.
From https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/ download "IMDB: faces only"
(imdb_crop.tar) and/or "Wikipedia: faces only" (wiki_crop.tar) and extract them into
manual_dir. When both are present only imdb is read (the reader's default, which='auto').
"""
    EXTRAS = {"face_score": ("float32", "face detector score; -inf when no face"), "subset": ("text", "imdb or wiki")}


def _text(values) -> np.ndarray:
    return np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values], dtype=object)


BUILDERS = {b.SOURCE: b for b in (UtkFace, AdienceFaces, CelebAFaces, ImdbWikiFaces)}
