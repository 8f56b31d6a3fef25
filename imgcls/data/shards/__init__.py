"""WebDataset tar shards as a data source: local paths or HTTP(S) URLs, streamed into the same readers and loader.

``pattern`` (brace patterns, a data dir's shards), ``tar_stream`` (a shard's samples, HTTP retries), ``index``
(index.json: samples per shard, classes), ``order`` (shard order, rank split, shuffle buffer, seeds),
``shard_set`` (a split's shards as a dataset), ``loader`` (``ShardLoader``), ``writer`` (``python -m
imgcls.data.shards``: shards from list files or class folders).
"""

from .loader import ShardLoader
from .order import DEFAULT_SHUFFLE_BUFFER
from .shard_set import ShardSet, shard_dataset
from .tar_stream import ShardReadError, ShardSample, stream_shard

__all__ = [
    "DEFAULT_SHUFFLE_BUFFER",
    "ShardLoader",
    "ShardReadError",
    "ShardSample",
    "ShardSet",
    "shard_dataset",
    "stream_shard",
]
