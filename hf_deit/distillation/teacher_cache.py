"""A cached teacher: one pass of a CNN teacher over the training images, then distillation without the teacher.

    hf-deit cache-teacher runs/teacher_cifar10 ../shared/data/cifar10 runs/teacher_cifar10/cache-train.parquet
    python examples/distill.py ... --teacher_cache runs/teacher_cifar10/cache-train.parquet

Design (ReLabel, Yun et al. CVPR 2021): the teacher sees each training image once, whole, resized to a fixed
`input_size`. Its classifier is applied at every location of its last feature map, before global pooling: a dense
label map (classes, h, w). For a teacher that ends in average pooling + a linear layer (ResNets, RegNets, ...) the
mean of that map over the whole image *is* the teacher's logits, exactly (pooling and the linear layer commute).
Each location keeps its top-k logits. At train time the random crop's box selects a region of the map and the
area-weighted mean over the box (the map read as piecewise constant over its cells; ReLabel uses RoIAlign, which
gives the same for the full box) approximates the teacher's logits for that crop. Mixup/CutMix mix these logits with
the coefficient that mixed the images (for CutMix timm's area-corrected lambda).

What is approximated (docs/method.md): the teacher's view of a crop is its features pooled over the crop's part of
the whole image, not a forward pass on the resized crop (receptive fields reach past the box, and the scale differs);
it never sees RandAugment, random erasing or the mixed image; a flip does not change the pooled logits; classes
outside a location's top-k get that location's k-th logit. Both hard and soft distillation use the result.

File: one parquet file (streams with `datasets`: `load_dataset("parquet", data_files=PATH)`), one row per image:
example_key (hf_deit.data.row_key: label + the image's path inside the dataset, or its bytes), example_content (the
hash of the image's encoded bytes), image_identity (its path inside the dataset, for messages), label, topk_logits and
topk_classes (h * w * k values, location-major: (h, w, k) flattened). Rows are found by key, not position, so the
same cache serves the split read map-style or streamed, in any order, and a moved dataset folder.
The schema metadata key `hf_deit_teacher_cache`
holds `TeacherCacheInfo` (teacher, weights hash, input size, top-k, map size, dataset name/split/hash).

What a cache is bound to, and where it is checked: the student's classes and every row key of a map-style split when
it is loaded (streams: each batch); each image's bytes at each batch (the batch carries the hash of the bytes it was
decoded from; a changed file is refused, naming it); the teacher, when one is named beside the cache
(--teacher_name_or_path): the same weights (`check_cache_teacher`). A cache needs no teacher to train from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.row_key import CONTENT_KEY, ROW_KEY, content_hash, image_identity, row_key
from .teacher import FrozenTeacher

logger = logging.getLogger(__name__)

METADATA_KEY = b"hf_deit_teacher_cache"
CACHE_FORMAT_VERSION = 3  # 3: + each row's content hash and identity; 2: rows keyed by example_key; 1: by position
IDENTITY_COLUMN = "image_identity"


class StaleTeacherCacheError(ValueError):
    """The cache was made for other images, another teacher or other settings than those asked for."""


@dataclass
class TeacherCacheInfo:
    """What a cache was made from; stored in the parquet schema metadata and checked when it is loaded."""

    teacher: str  # name or path the teacher was loaded from
    teacher_sha256: str  # of its weights (state dict), so a retrained teacher at the same path is noticed
    input_size: int  # the teacher saw each whole image resized to input_size x input_size
    top_k: int
    num_classes: int
    map_size: tuple[int, int]  # (h, w) of the dense label map
    dataset: str
    split: str
    num_rows: int
    dataset_sha256: str  # over the row keys, in order
    version: int = CACHE_FORMAT_VERSION


# --- dense teacher --------------------------------------------------------------------------------------------
def _classifier(model: nn.Module) -> nn.Linear:
    get_classifier = getattr(model, "get_classifier", None)
    classifier = get_classifier() if get_classifier is not None else None
    if not isinstance(classifier, nn.Linear) or not hasattr(model, "forward_features"):
        raise TypeError(
            f"{type(model).__name__} is not a timm CNN with forward_features + a linear classifier: a dense label map "
            "needs a teacher whose head is global average pooling + nn.Linear (timm ResNet, RegNet, EfficientNet...). "
            "Use a live teacher (--teacher_name_or_path) for this one."
        )
    return classifier


@torch.no_grad()
def dense_logits(teacher: FrozenTeacher, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's classifier at every location of its last feature map: (batch, classes, h, w), and the
    teacher's own logits (batch, classes) for the same batch (the student's normalisation, any size)."""
    model = teacher.model
    classifier = _classifier(model)
    x = pixel_values  # the teacher's normalisation, at the size given (the cache's input_size: no resize here)
    if teacher.renormalise:
        x = x * teacher.scale.to(x.dtype) + teacher.shift.to(x.dtype)
    features = model.forward_features(x)  # (B, C, h, w)
    if features.ndim != 4:
        raise TypeError(f"forward_features gave shape {tuple(features.shape)}; a dense label map needs (B, C, h, w).")
    # (B, C, h, w) x (classes, C) -> (B, classes, h, w); the bias is added at every location (it survives the mean).
    dense = torch.einsum("bchw,kc->bkhw", features.float(), classifier.weight.float())
    dense = dense + classifier.bias.float().view(1, -1, 1, 1)
    return dense, model.forward_head(features).float()


def check_dense_map(dense: torch.Tensor, logits: torch.Tensor, atol: float = 1e-3) -> None:
    """The mean of the dense map over all locations must give the teacher's logits (avg pool + linear head), and
    both must be finite: a NaN teacher would otherwise be cached (NaN compares false against any tolerance)."""
    if not bool(torch.isfinite(dense).all() and torch.isfinite(logits).all()):
        raise FloatingPointError(
            "The teacher gave non-finite logits (NaN or inf) while its cache was built: a cache of them would teach "
            "the student garbage. Check the teacher's weights (e.g. `hf-deit predict` with it) and its input "
            "normalisation."
        )
    error = float((dense.mean(dim=(2, 3)) - logits).abs().max())
    if error > atol * max(1.0, float(logits.abs().max())):
        raise TypeError(
            f"The teacher's head is not average pooling + linear: the dense map's mean differs from its logits by "
            f"{error:.3g}. Its predictions cannot be cached as a label map; use a live teacher."
        )


def weights_sha256(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# --- dataset identity -----------------------------------------------------------------------------------------
def row_keys(dataset, identities: list[str] | None = None) -> np.ndarray:
    """`row_key` of every row of a map-style dataset with `image` and `label` columns (read as Arrow: no decoding;
    an image without a path is hashed by its bytes). Each row's `image_identity` is appended to `identities` if given."""
    keys = []
    for batch in dataset.with_format("arrow").select_columns(["image", "label"]).iter(batch_size=4096):
        images, labels = batch.column("image").to_pylist(), batch.column("label").to_pylist()
        keys += [row_key(image, label) for image, label in zip(images, labels)]
        if identities is not None:
            identities += [image_identity(image) for image in images]
    return np.asarray(keys, dtype=np.int64)


def _dataset_sha256(keys: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(keys, dtype="<i8").tobytes()).hexdigest()


# --- writing the cache ----------------------------------------------------------------------------------------
class _WholeImage:
    """Undecoded image -> the whole image resized to (size, size), normalised like the student's batches, and the
    content hash of its bytes (as the training examples carry it)."""

    def __init__(self, size: int) -> None:
        from torchvision import transforms

        from ..data.decode import decode_image, read_image_bytes
        from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, ToNormalizedTensor

        self.read, self.decode = read_image_bytes, decode_image
        self.resize = transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC)
        self.to_tensor = ToNormalizedTensor(IMAGENET_MEAN, IMAGENET_STD)

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        data = [self.read(raw) for raw in batch["image"]]
        return {"pixel_values": [self.to_tensor(self.resize(self.decode(d))) for d in data],
                CONTENT_KEY: [content_hash(d) for d in data]}


@torch.no_grad()
def cache_teacher(
    teacher: FrozenTeacher,
    dataset,
    output_path: str,
    *,
    teacher_name: str,
    dataset_name: str = "",
    split: str = "train",
    input_size: int | None = None,
    top_k: int = 10,
    batch_size: int = 64,
    num_workers: int = 0,
) -> TeacherCacheInfo:
    """One teacher pass over `dataset` (map-style, `image` + `label` columns as `load_image_dataset` gives) ->
    the parquet cache at `output_path`. `input_size` defaults to the teacher's own; `top_k` is capped at the
    number of classes (k = classes stores the map exactly)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from torch.utils.data import DataLoader

    size = input_size or (teacher.input_size[0] if teacher.input_size else 224)
    identities: list[str] = []
    keys = row_keys(dataset, identities)
    images = dataset.select_columns(["image"]).with_transform(_WholeImage(size))
    loader = DataLoader(images, batch_size=batch_size, num_workers=num_workers, collate_fn=_stack)
    device = next(teacher.model.parameters()).device
    values, classes, contents, map_size, num_classes = [], [], [], None, None
    for pixel_values, content in tqdm(loader, desc=f"Caching {teacher_name}", unit="batch"):
        contents.append(content)
        dense, logits = dense_logits(teacher, pixel_values.to(device))
        check_dense_map(dense, logits)
        num_classes, map_size = dense.shape[1], tuple(dense.shape[2:])
        k = min(top_k, num_classes)
        top = dense.permute(0, 2, 3, 1).topk(k, dim=-1)  # (B, h, w, k): location-major, as stored
        values.append(top.values.flatten(1).cpu().numpy().astype(np.float32))
        classes.append(top.indices.flatten(1).cpu().numpy().astype(np.int32))
    top_k = min(top_k, num_classes)
    info = TeacherCacheInfo(
        teacher=teacher_name, teacher_sha256=weights_sha256(teacher.model), input_size=size, top_k=top_k,
        num_classes=num_classes, map_size=map_size, dataset=dataset_name, split=split, num_rows=len(keys),
        dataset_sha256=_dataset_sha256(keys),
    )
    values, classes = np.concatenate(values), np.concatenate(classes)
    width = values.shape[1]
    table = pa.table({
        ROW_KEY: pa.array(keys),
        CONTENT_KEY: pa.array(np.concatenate(contents)),
        IDENTITY_COLUMN: pa.array(identities, pa.string()),
        "label": pa.array(dataset.with_format("arrow")["label"].to_numpy()),
        "topk_logits": pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), width),
        "topk_classes": pa.FixedSizeListArray.from_arrays(pa.array(classes.reshape(-1).astype(np.int16)), width),
    })
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(asdict(info)).encode()})
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    pq.write_table(table, output_path, row_group_size=1024)
    return info


def _stack(examples: list[dict]) -> tuple[torch.Tensor, np.ndarray]:
    contents = np.asarray([example[CONTENT_KEY] for example in examples], dtype=np.int64)
    return torch.stack([example["pixel_values"] for example in examples]), contents


# --- reading the cache: the teacher at train time -------------------------------------------------------------
def box_weights(lo: torch.Tensor, hi: torch.Tensor, cells: int) -> torch.Tensor:
    """Overlap of [lo, hi] (fractions of the image, clipped to [0, 1]) with each of `cells` equal cells,
    normalised to sum 1: (batch, cells). A box outside the image (a padded crop) keeps its inside part."""
    lo, hi = lo.clamp(0, 1) * cells, hi.clamp(0, 1) * cells  # (B,) in cell units
    edges = torch.arange(cells, device=lo.device, dtype=lo.dtype)
    overlap = (torch.minimum(hi[:, None], edges + 1) - torch.maximum(lo[:, None], edges)).clamp(min=0)
    total = overlap.sum(dim=1, keepdim=True)
    # A degenerate box (no area inside the image) falls back to the whole image.
    return torch.where(total > 0, overlap / total.clamp(min=1e-12), torch.full_like(overlap, 1.0 / cells))


@dataclass
class MixRecord:
    """How a batch was mixed: the first `even` images with their flip(0) partners, coefficient `lam`
    (a float for batch mode, a (even, 1) tensor for elem/pair modes)."""

    lam: float | torch.Tensor
    even: int


def mix_logits(logits: torch.Tensor, mix: MixRecord | None) -> torch.Tensor:
    """Mix per-image teacher logits as timm's Mixup mixed the images: lam * t + (1 - lam) * t.flip(0)."""
    if mix is None or mix.even < 2:
        return logits
    lam = mix.lam if isinstance(mix.lam, float) else mix.lam.to(logits)
    head = logits[: mix.even]
    return torch.cat([lam * head + (1 - lam) * head.flip(0), logits[mix.even :]])


class CachedTeacher(nn.Module):
    """The teacher's logits for a batch, read from a cache instead of computed. Interchangeable with a live
    `FrozenTeacher` through `logits_for_batch(pixel_values, batch, mix)`; this one reads the batch's
    `example_key`, `crop_box` (and `crop_flip`) and the Mixup/CutMix record, and never the pixels.

    `keys`: each stored row's `row_key` (default: 0..rows-1, for a cache built in memory whose batches carry their
    row numbers as keys). Rows are looked up by key, so map-style and streamed data, in any order, both work.
    `contents`: each stored row's `content_hash` (None: not checked); `path`: the file, read again only to name the
    images of a refused batch."""

    def __init__(self, info: TeacherCacheInfo, topk_logits: torch.Tensor, topk_classes: torch.Tensor,
                 labels: torch.Tensor | None = None, keys: torch.Tensor | None = None,
                 contents: torch.Tensor | None = None, path: str | None = None) -> None:
        super().__init__()
        self.info = info
        self.path = path
        h, w = info.map_size
        # (rows, h * w * k) -> (rows, h, w, k)
        self.register_buffer("topk_logits", topk_logits.view(-1, h, w, info.top_k), persistent=False)
        self.register_buffer("topk_classes", topk_classes.view(-1, h, w, info.top_k).long(), persistent=False)
        self.register_buffer("labels", labels, persistent=False)
        self.register_buffer("contents", contents, persistent=False)
        keys = torch.arange(len(self.topk_logits)) if keys is None else keys.long()
        # Sorted keys + the row each one is at: a batch's rows by binary search (torch.searchsorted), on the device.
        sorted_keys, order = keys.sort()
        self.register_buffer("sorted_keys", sorted_keys, persistent=False)
        self.register_buffer("row_of_sorted", order, persistent=False)

    @classmethod
    def load(cls, path: str, *, num_labels: int | None = None, dataset=None, teacher: str | None = None,
             teacher_sha256: str | None = None, input_size: int | None = None, top_k: int | None = None) -> CachedTeacher:
        """Read a cache and refuse it (`StaleTeacherCacheError`) when it does not match what is asked: `num_labels`
        (the student's classes), `dataset` (each of its rows must be in the cache), `teacher` (its name),
        `teacher_sha256` (`weights_sha256` of the teacher now: a retrained teacher), `input_size`, `top_k`."""
        import pyarrow.parquet as pq

        info = read_cache_info(path)
        remake = _remake(info, path)
        for name, wanted, have in (("num_classes", num_labels, info.num_classes), ("teacher", teacher, info.teacher),
                                   ("teacher_sha256", teacher_sha256, info.teacher_sha256),
                                   ("input_size", input_size, info.input_size), ("top_k", top_k, info.top_k)):
            if wanted is not None and wanted != have:
                raise StaleTeacherCacheError(f"{path} was made with {name}={have!r}, but {wanted!r} is asked for. {remake}")
        table = pq.read_table(path, columns=[ROW_KEY, CONTENT_KEY, "label", "topk_logits", "topk_classes"])
        width = info.map_size[0] * info.map_size[1] * info.top_k
        logits = torch.tensor(table.column("topk_logits").combine_chunks().flatten().to_numpy().reshape(-1, width))
        classes = torch.from_numpy(
            table.column("topk_classes").combine_chunks().flatten().to_numpy().astype(np.int64).reshape(-1, width)
        )
        columns = {name: torch.from_numpy(table.column(name).to_numpy().astype(np.int64))
                   for name in ("label", ROW_KEY, CONTENT_KEY)}  # fmt: skip
        cache = cls(info, logits, classes, columns["label"], columns[ROW_KEY], columns[CONTENT_KEY], path=path)
        if dataset is not None:
            cache.check_dataset(dataset, path)
        return cache

    def rows(self, keys: torch.Tensor, where: str = "the batch", contents: torch.Tensor | None = None) -> torch.Tensor:
        """The cache rows holding these row keys; a key the cache does not hold, or (with `contents`, the hashes of
        the images' bytes) an image whose bytes changed since the cache was made, is a stale cache."""
        keys = keys.to(self.sorted_keys.device)
        position = torch.searchsorted(self.sorted_keys, keys).clamp(max=len(self.sorted_keys) - 1)
        rows = self.row_of_sorted[position]
        missing = self.sorted_keys[position] != keys
        stale = missing
        if contents is not None and self.contents is not None:
            changed = (self.contents[rows] != contents.to(self.contents.device)) & ~missing
            stale = missing | changed
        if bool(stale.any()):  # one host sync per batch for both checks
            if bool(missing.any()):
                raise StaleTeacherCacheError(
                    f"{int(missing.sum())} of {len(keys)} images in {where} are not in the teacher cache (made from "
                    f"{self.info.dataset or 'another dataset'} [{self.info.split}]): the data changed since, or it is "
                    f"another split. {_remake(self.info, self.path or 'CACHE')}"
                )
            raise StaleTeacherCacheError(self._changed_message(rows[changed], len(keys), where))
        return rows

    def _changed_message(self, rows: torch.Tensor, total: int, where: str) -> str:
        names = [f"row {row}" for row in rows.tolist()]
        if self.path is not None:
            import pyarrow.parquet as pq

            identities = pq.read_table(self.path, columns=[IDENTITY_COLUMN]).column(IDENTITY_COLUMN)
            names = [identities[row].as_py() for row in rows.tolist()]
        files = list(dict.fromkeys(names))  # repeated augmentation puts copies of one image in a batch
        return (
            f"{len(names)} of {total} images in {where} changed since the teacher cache was made (their bytes differ "
            f"from those the teacher saw): {', '.join(files[:5])}{' ...' if len(files) > 5 else ''}. "
            f"{_remake(self.info, self.path or 'CACHE')}"
        )

    def check_dataset(self, dataset, path: str = "the cache") -> None:
        """Every row of a map-style `dataset` (`image` + `label` columns) must be in the cache, with the same label.
        Streams cannot be checked before training without reading them: each batch is checked as it comes."""
        if not hasattr(dataset, "with_format") or not hasattr(dataset, "__len__"):
            logger.info("Streamed training data: each batch's rows are checked against %s as they come.", path)
            return
        keys = torch.from_numpy(row_keys(dataset))
        if len(keys):
            self.rows(keys, where=f"the training data ({len(keys)} rows; checked against {path})")

    def dense_map(self, rows: torch.Tensor) -> torch.Tensor:
        """The stored maps of these cache rows: (batch, h, w, classes), classes outside a location's top-k set to that
        location's smallest stored logit (exact when top_k == num_classes)."""
        values, classes = self.topk_logits[rows], self.topk_classes[rows]  # (B, h, w, k)
        floor = values[..., -1:].expand(*values.shape[:-1], self.info.num_classes)  # k-th logit per location
        return floor.clone().scatter_(-1, classes, values)

    def crop_logits(self, rows: torch.Tensor, crop_box: torch.Tensor | None) -> torch.Tensor:
        """Area-weighted mean of each row's map over its crop box (x0, y0, x1, y1 in image fractions): (B, classes).
        No box: the whole image, i.e. exactly the teacher's logits for the whole image (up to top-k)."""
        dense = self.dense_map(rows)  # (B, h, w, K)
        h, w = self.info.map_size
        if crop_box is None:
            return dense.mean(dim=(1, 2))
        box = crop_box.to(dense)
        weight_x, weight_y = box_weights(box[:, 0], box[:, 2], w), box_weights(box[:, 1], box[:, 3], h)
        return torch.einsum("bhwk,bh,bw->bk", dense, weight_y, weight_x)

    @torch.no_grad()
    def logits_for_batch(self, pixel_values: torch.Tensor, batch: Mapping[str, torch.Tensor],
                         mix: MixRecord | None = None) -> torch.Tensor:
        if ROW_KEY not in batch:
            raise KeyError(
                f"A cached teacher needs '{ROW_KEY}' (and 'crop_box') in each batch: build the training data with "
                "hf_deit.data.build_datasets (map-style or streaming) and its collator."
            )
        if self.contents is not None and CONTENT_KEY not in batch:
            raise KeyError(
                f"This teacher cache checks each image's bytes: each batch needs '{CONTENT_KEY}' (the training data "
                "of hf_deit.data.build_datasets carries it)."
            )
        rows = self.rows(batch[ROW_KEY], contents=batch.get(CONTENT_KEY))
        labels = batch.get("labels")
        if labels is not None and not labels.is_floating_point() and self.labels is not None:
            if not torch.equal(self.labels[rows], labels.to(self.labels.device)):
                raise StaleTeacherCacheError("The batch's labels differ from the cache's for the same rows: stale cache.")
        logits = self.crop_logits(rows, batch.get("crop_box"))
        return mix_logits(logits, mix).to(pixel_values.device)

    def forward(self, pixel_values: torch.Tensor, batch: Mapping[str, torch.Tensor], mix: MixRecord | None = None):
        return self.logits_for_batch(pixel_values, batch, mix)

    @property
    def num_labels(self) -> int:
        return self.info.num_classes


def read_cache_info(path: str) -> TeacherCacheInfo:
    """What a cache file was made from (its schema metadata only: no rows are read); an old format is refused."""
    import pyarrow.parquet as pq

    if not os.path.isfile(path):
        raise FileNotFoundError(f"No teacher cache at {path}: make one with `hf-deit cache-teacher TEACHER DATA {path}`.")
    return _read_info(pq.read_schema(path), path)


def check_cache_teacher(info: TeacherCacheInfo, path: str, teacher: str, checkpoint_path: str | None = None) -> None:
    """The teacher named beside a cache (--teacher_name_or_path) must be the one the cache was made by: the same
    weights (SHA-256 of its state dict; names may differ, e.g. a relative and an absolute path). Loads the teacher."""
    from .teacher import load_teacher

    named = weights_sha256(load_teacher(teacher, num_labels=info.num_classes, checkpoint_path=checkpoint_path).model)
    if named != info.teacher_sha256:
        raise StaleTeacherCacheError(
            f"{path} was made by the teacher {info.teacher!r} (weights sha256 {info.teacher_sha256[:16]}...), but "
            f"--teacher_name_or_path names {teacher!r} (weights sha256 {named[:16]}...): another teacher, or the "
            "same one retrained. Leave out --teacher_name_or_path to train from the cache as it is, or rebuild it "
            f"with `hf-deit cache-teacher {teacher} {info.dataset or 'DATA'} {path}`."
        )


def _read_info(schema, path: str) -> TeacherCacheInfo:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise StaleTeacherCacheError(f"{path} is not an hf_deit teacher cache (no {METADATA_KEY.decode()} metadata).")
    record = json.loads(raw)
    record["map_size"] = tuple(record["map_size"])
    info = TeacherCacheInfo(**{k: v for k, v in record.items() if k in TeacherCacheInfo.__dataclass_fields__})
    if info.version != CACHE_FORMAT_VERSION:
        raise StaleTeacherCacheError(
            f"{path} has cache format {info.version}, this hf_deit reads {CACHE_FORMAT_VERSION}. {_remake(info, path)}"
        )
    return info


def _remake(info: TeacherCacheInfo, path: str) -> str:
    return f"Rebuild it with `hf-deit cache-teacher {info.teacher} {info.dataset or 'DATA'} {path}`."


def cache_teacher_cli(teacher: str, data: str, output_path: str, *, split: str = "train", input_size: int | None = None,
                      top_k: int = 10, batch_size: int = 64, num_workers: int = 0, max_samples: int | None = None,
                      device: str | None = None) -> TeacherCacheInfo:
    """`hf-deit cache-teacher`: load the teacher and the split as training would (same rows), cache."""
    from ..data import load_image_dataset
    from .teacher import load_teacher

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dataset = load_image_dataset(data, split)
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    frozen = load_teacher(teacher, num_labels=dataset.features["label"].num_classes, device=device)
    return cache_teacher(frozen, dataset, output_path, teacher_name=teacher, dataset_name=data, split=split,
                         input_size=input_size, top_k=top_k, batch_size=batch_size, num_workers=num_workers)


__all__ = [
    "CachedTeacher",
    "MixRecord",
    "StaleTeacherCacheError",
    "TeacherCacheInfo",
    "box_weights",
    "cache_teacher",
    "cache_teacher_cli",
    "check_cache_teacher",
    "dense_logits",
    "mix_logits",
    "read_cache_info",
]
