"""Fine-tune the region describer with the supervised contrastive loss (paper eq. 5).

Data: defect images in the MVTec layout; each ground-truth mask is split into
individual regions (DBSCAN, paper eq. 4) and every region is labelled with its
image's defect kind (the test/KIND folder). The visual encoder stays frozen, so
its patch embeddings are computed once per image (optionally cached on disk)
and a training step is a pass over small tensors.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engine.defects.describer import RegionDescriber, frame_patch_embeddings, pool_grid
from engine.defects.kind_names import KindNameError, kind_key
from engine.defects.label_vocabulary import vocabulary_from_labels
from engine.defects.regions import split_mask
from engine.defects.vocabulary import Vocabulary
from engine.training.datasets import Sample, load_mask, load_rgb


@dataclass(frozen=True)
class DescriberTrainConfig:
    steps: int = 300
    batch_size: int = 64
    lr_new: float = 1e-3  # mask path, adapter, LoRA
    lr_pretrained: float = 1e-5  # projections copied from the CLAD heads: keep what they know
    weight_decay: float = 1e-4
    tau: float = 0.07
    flips: bool = True  # the paper's augmentation (horizontal and vertical flips)
    seed: int = 0


@dataclass
class RegionSet:
    """Regions of some images: features per image, one mask and kind index per region."""

    kinds: list[str]
    images: list[Path]
    features: torch.Tensor  # [I, C, h, w] float16 patch embeddings
    image_of: torch.Tensor  # [M] long, region -> image row
    masks: torch.Tensor  # [M, S/2, S/2] bool (max-pooled: a 1-px defect stays visible)
    labels: torch.Tensor  # [M] long, kind index

    def subset(self, regions: np.ndarray) -> RegionSet:
        idx = torch.as_tensor(np.asarray(regions, dtype=np.int64))
        return RegionSet(self.kinds, self.images, self.features, self.image_of[idx],
                         self.masks[idx], self.labels[idx])  # fmt: skip


def gt_regions(sample: Sample, size: int, min_area: int) -> list[np.ndarray]:
    """The sample's ground-truth mask split into individual regions at size x size."""
    return split_mask(load_mask(sample, size).astype(bool), min_area=min_area)


class FeatureCache:
    """Frozen-encoder patch embeddings per image, in memory and optionally on disk."""

    def __init__(self, encoder: torch.nn.Module, preprocess: torch.nn.Module, size: int,
                 pool: int, tag: str, cache_dir: Path | None = None,
                 grid: int = 20) -> None:  # fmt: skip
        self.encoder, self.preprocess, self.size, self.pool = encoder, preprocess, size, pool
        self.grid = grid  # stored pooled to the describer's grid: what training reads
        self.tag, self.cache_dir = tag, cache_dir
        self._mem: dict[Path, torch.Tensor] = {}

    def _key(self, path: Path) -> Path | None:
        if self.cache_dir is None:
            return None
        st = path.stat()
        raw = f"{path.resolve()}|{st.st_mtime_ns}|{st.st_size}|{self.tag}|{self.size}|{self.pool}"
        return self.cache_dir / f"{hashlib.sha1(raw.encode()).hexdigest()}.pt"

    def get(self, path: Path) -> torch.Tensor:
        if path in self._mem:
            return self._mem[path]
        key = self._key(path)
        if key is not None and key.is_file():
            feat = torch.load(key, weights_only=True)
        else:
            frame = torch.from_numpy(load_rgb(path, self.size)[None])
            feat = frame_patch_embeddings(self.encoder, self.preprocess, frame, self.pool)[0]
            feat = feat.half()
            if key is not None:
                key.parent.mkdir(parents=True, exist_ok=True)
                torch.save(feat, key)
        # the disk holds the full grid (valid for any describer grid); memory the pooled one
        feat = pool_grid(feat[None].float(), self.grid)[0].half()
        self._mem[path] = feat
        return feat


def _half_res(mask: np.ndarray) -> torch.Tensor:
    m = torch.from_numpy(mask)[None, None].float()
    return torch.nn.functional.max_pool2d(m, 2)[0, 0] > 0


def build_region_set(samples: list[Sample], kinds: list[str], cache: FeatureCache,
                     min_area: int = 4, progress: bool = True) -> RegionSet:  # fmt: skip
    """Features and split ground-truth regions of the defect samples whose kind is known."""
    images, feats, image_of, masks, labels = [], [], [], [], []
    defects = [s for s in samples if s.label == 1 and s.mask_path is not None]
    usable = [(s, k) for s in defects if (k := _key_in(s.kind, kinds)) is not None]
    for s, key in tqdm(usable, desc="regions", disable=not progress, leave=False):
        regions = gt_regions(s, cache.size, min_area)
        if not regions:
            continue
        row = len(images)
        images.append(s.path)
        feats.append(cache.get(s.path))
        for m in regions:
            image_of.append(row)
            masks.append(_half_res(m))
            labels.append(kinds.index(key))
    if not masks:
        raise ValueError(f"no ground-truth regions of the kinds {kinds} in the given samples "
                         f"({len(defects)} defect images with a mask, {len(usable)} of "
                         f"those kinds)")
    return RegionSet(kinds, images, torch.stack(feats), torch.tensor(image_of),
                     torch.stack(masks), torch.tensor(labels))  # fmt: skip


def _key_in(folder: str, kinds: list[str]) -> str | None:
    """The kind of `kinds` a defect folder names ("Bent-Lead" -> "bent_lead"), or None."""
    if folder in kinds:
        return folder
    try:
        key = kind_key(folder, kinds)
    except KindNameError:
        return None
    return key if key in kinds else None


def dataset_vocabulary(category: str, samples: list[Sample], seed: Vocabulary | None = None,
                       ) -> Vocabulary:  # fmt: skip
    """The vocabulary of the defect kinds the samples are labelled with (their folders, those
    with a ground-truth mask), `seed`'s phrasings where it knows a kind."""
    names = [s.kind for s in samples if s.label == 1 and s.mask_path is not None]
    if not names:
        raise ValueError(f"{category}: no defect image with a ground-truth mask "
                         f"(test/KIND/*.png with ground_truth/KIND/*_mask.png)")
    return vocabulary_from_labels(category, names, seed=seed)[0]


def supcon_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, labels: torch.Tensor,
                tau: float) -> torch.Tensor:  # fmt: skip
    """Eq. 5: every region (anchor) against the batch's texts; positives = same kind.

    The anchor's own text stays in A(i): across modalities it is a true pair, not
    the trivial self-similarity SupCon excludes within one modality.
    """
    logits = image_emb @ text_emb.T / tau
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]).float()
    return (-(log_prob * pos).sum(dim=1) / pos.sum(dim=1)).mean()


def _batch(data: RegionSet, idx: torch.Tensor, gen: torch.Generator,
           flips: bool) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    x = data.features[data.image_of[idx]].float()
    m = data.masks[idx]
    if flips:  # flip features and masks together; the frozen CNN is near flip-equivariant
        for dim_x, dim_m in ((3, 2), (2, 1)):
            f = torch.rand(len(idx), generator=gen) < 0.5
            x[f], m[f] = x[f].flip(dim_x), m[f].flip(dim_m)
    return x, m


def train_describer(describer: RegionDescriber, data: RegionSet,
                    phrase_kind: list[int], config: DescriberTrainConfig | None = None,
                    progress: bool = True) -> dict[str, float]:  # fmt: skip
    """Fine-tune in place; class-balanced batches, a random phrasing per region."""
    cfg = config or DescriberTrainConfig()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    describer.tau = cfg.tau
    opt = torch.optim.AdamW(
        [{"params": describer.new_parameters(), "lr": cfg.lr_new},
         {"params": describer.pretrained_parameters(), "lr": cfg.lr_pretrained}],
        betas=(0.9, 0.999), weight_decay=cfg.weight_decay)  # fmt: skip
    owner = torch.as_tensor(phrase_kind)
    by_kind = [torch.nonzero(data.labels == k).flatten() for k in range(len(data.kinds))]
    present = [k for k, rows in enumerate(by_kind) if len(rows)]
    if not present:
        raise ValueError("no regions to train the describer on")
    describer.train()
    losses = []
    bar = tqdm(range(cfg.steps), desc="describer", disable=not progress, leave=False)
    for _ in bar:
        ks = torch.tensor(present)[torch.randint(len(present), (cfg.batch_size,), generator=gen)]
        idx = torch.stack([by_kind[k][torch.randint(len(by_kind[k]), (1,), generator=gen)][0]
                           for k in ks.tolist()])  # fmt: skip
        x, m = _batch(data, idx, gen, cfg.flips)
        labels = data.labels[idx]
        phrase = torch.stack([
            torch.nonzero(owner == k).flatten()[
                torch.randint(int((owner == k).sum()), (1,), generator=gen)][0]
            for k in labels.tolist()])  # fmt: skip
        loss = supcon_loss(describer.region_embeddings(x, m),
                           describer.text_embeddings(describer.vocab_text[phrase]), labels,
                           cfg.tau)  # fmt: skip
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    describer.eval()
    return {"final_loss": float(np.mean(losses[-20:])), "steps": cfg.steps,
            "n_regions": int(len(data.labels)), **asdict(cfg)}  # fmt: skip


@torch.no_grad()
def similarities(describer: RegionDescriber, data: RegionSet, batch: int = 64) -> np.ndarray:
    """Cosine of every region to every kind prototype [M, K] (logits = this / tau)."""
    describer.eval()
    out = []
    for i in range(0, len(data.labels), batch):
        idx = torch.arange(i, min(i + batch, len(data.labels)))
        x = data.features[data.image_of[idx]].float()
        out.append(describer(x, data.masks[idx]) * describer.tau)
    return torch.cat(out).numpy()


def predict_kinds(describer: RegionDescriber, data: RegionSet, batch: int = 64) -> np.ndarray:
    """Kind index predicted for every region of `data` (tau > 0: same argmax as logits)."""
    return similarities(describer, data, batch).argmax(axis=1)


def make_feature_cache(runtime: torch.nn.Module | None = None, cache_dir: Path | None = None,
                       backbone: str = "efficientnet-lite0",
                       stages: tuple[int, ...] = (2, 4)) -> FeatureCache:  # fmt: skip
    """Features as a saved model's runtime computes them, or the default encoder's."""
    from engine.scoring.runtime_model import CladRuntime
    from engine.scoring.visual_encoder import VisualEncoder

    if runtime is None:
        enc = VisualEncoder(backbone, stages)
        runtime = CladRuntime(enc, torch.zeros(1, sum(enc.channels)), 1.0)
    enc = runtime.encoder
    tag = f"{type(enc).__name__}:{getattr(enc, 'out_blocks', '')}:{backbone}"
    return FeatureCache(enc, runtime.preprocess, int(runtime.input_size), int(runtime.pool),
                        tag, cache_dir)  # fmt: skip


def feature_settings(cache: FeatureCache) -> dict[str, object]:
    return {"input_size": cache.size, "pool": cache.pool, "encoder": cache.tag,
            "grid": cache.grid}
