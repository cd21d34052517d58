"""The training and validation loaders of a run, and the checks that the configs fit the data.

Training streams (`autoe2e.data.streaming`) through torchdata's `StatefulDataLoader`, whose
`state_dict()` is the loader position a checkpoint stores. Validation streams the full val
split in file order, every sample once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from autoe2e.config import ConfigError, ModelConfig, TrainConfig
from autoe2e.data.streaming import ManifestSource, MapStyleSource, SampleSource, StreamingDataset
from autoe2e.splits import split_episodes
from autoe2e.training import distributed
from autoe2e.training.runtime import DatasetFactory

logger = logging.getLogger(__name__)


@dataclass
class RunData:
    split: dict[str, list[str]]
    cameras: list[str]
    train: StreamingDataset
    train_loader: StatefulDataLoader
    val_loader: DataLoader


def camera_mismatch(cameras: list[str], cfg: ModelConfig) -> list[str]:
    if len(cameras) <= cfg.max_cameras:
        return []
    return [
        f"max_cameras={cfg.max_cameras} but the dataset has {len(cameras)} cameras "
        f"{cameras}; raise max_cameras to >= {len(cameras)}"
    ]


def check_fits(manifest: dict[str, Any], manifest_uri: str, cfg: ModelConfig) -> None:
    """The model's input shapes must be the prepared ones: a mismatch found here costs
    nothing, one found in the first forward pass costs a pod start and a confusing trace."""
    dims = manifest["dims"]
    height, width = (int(v) for v in manifest["image_size"])
    wanted = {
        "image_height": (cfg.image_height, height, "image_height"),
        "image_width": (cfg.image_width, width, "image_width"),
        "history_len": (cfg.history_len, dims["H"], "history_offsets_s (its length)"),
        "future_steps": (cfg.future_steps, dims["F"], "future_offsets_s (its length)"),
        "ego_history_steps": (cfg.ego_history_steps, dims["E"], "ego_history_steps"),
        "trajectory_steps": (cfg.trajectory_steps, dims["T"], "trajectory_steps"),
        "map_raster_size": (cfg.map_raster_size, dims["R"], "map_raster_size"),
        "map_channels": (cfg.map_channels, dims["C"], "the map kinds"),
    }
    wrong = [
        f"{name}={mine} but the shards have {theirs} (PrepareConfig {prep})"
        for name, (mine, theirs, prep) in wanted.items()
        if int(mine) != int(theirs)
    ]
    wrong += camera_mismatch(list(manifest["cameras"]), cfg)
    if wrong:
        raise ConfigError(
            f"the model config does not fit {manifest_uri}: {'; '.join(wrong)}. Change the "
            "ModelConfig (--set field=value) or prepare the data with matching settings"
        )


def build(
    manifest_uri: str,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    info: distributed.DistInfo,
    factory: DatasetFactory | None,
) -> RunData:
    frames = model_cfg.use_world_model
    if factory is None:
        full = ManifestSource(manifest_uri, None, frames)
        check_fits(full.manifest, manifest_uri, model_cfg)
        episodes, cameras = full.episode_ids(), full.cameras
    else:  # tests and benchmarks: map-style datasets with the same item layout
        whole = factory(manifest_uri, None, frames)
        episodes, cameras = list(whole.episode_ids()), list(whole.cameras)
        wrong = camera_mismatch(cameras, model_cfg)
        if wrong:
            raise ConfigError(f"the model config does not fit {manifest_uri}: {wrong[0]}")
    split = split_episodes(list(episodes), cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    logger.info("split by episode: %s", {k: len(v) for k, v in split.items()})

    def source(names: list[str]) -> SampleSource:
        if factory is None:
            return ManifestSource(manifest_uri, names, frames)
        return MapStyleSource(factory(manifest_uri, names, frames))

    train_source, val_source = source(split["train"]), source(split["val"])
    sizes = {
        name: sum(p.num_samples for p in s.shard_pieces())
        for name, s in (("train", train_source), ("val", val_source))
    }
    if not all(sizes.values()):
        raise ValueError(
            f"{manifest_uri}: empty split ({sizes} samples); prepare more samples per episode "
            "or more episodes"
        )
    cuda = info.device.type == "cuda"
    workers = cfg.num_workers
    loader_options: dict[str, Any] = {
        "batch_size": None,  # the dataset yields whole batches
        "num_workers": workers,
        "pin_memory": cuda,
        "persistent_workers": workers > 0,
    }
    if workers > 0:
        loader_options["prefetch_factor"] = cfg.prefetch_factor
    train = StreamingDataset(
        train_source,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        rank=info.rank,
        world_size=info.world_size,
        num_workers=workers,
        shuffle=True,
        shuffle_buffer=cfg.shuffle_buffer,
        uneven=cfg.uneven_batches,
    )
    val = StreamingDataset(
        val_source, batch_size=cfg.batch_size, num_workers=workers, shuffle=False, uneven="none"
    )
    return RunData(
        split=split,
        cameras=cameras,
        train=train,
        train_loader=StatefulDataLoader(train, **loader_options),
        val_loader=DataLoader(val, **loader_options),
    )
