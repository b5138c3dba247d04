"""Cheap sample totals for progress displays: tar member names (headers only, data skipped),
Parquet footers, Arrow IPC file footers. Anything else (remote, compressed, pipe:) is unknown:
the scan never reads a shard twice to count it."""

from __future__ import annotations

import threading

from vlmaudit.scan.samples import member_key
from vlmaudit.scan.shards import is_remote


def count_samples(url: str) -> int | None:
    """Samples in one shard, or None when that cannot be known cheaply (or the file is damaged)."""
    from vlmaudit.scan.folder_source import folder_shard_samples, is_folder_shard

    lower = url.lower()
    if is_remote(url):
        return None
    try:
        if is_folder_shard(url):
            return folder_shard_samples(url)
        if lower.endswith(".tar"):
            return _tar_samples(url)
        if lower.endswith(".parquet"):
            import pyarrow.parquet as pq

            return pq.ParquetFile(url).metadata.num_rows
        if lower.endswith(".arrow"):
            return _arrow_rows(url)
    except Exception:  # damaged or unreadable: the scan records it on the shard; here it is just unknown
        return None
    return None


def _tar_samples(path: str) -> int:
    """Runs of consecutive regular-file members with the same key, exactly as the scan groups them
    (every file member, './' dropped, oversized long-name headers skipped); tarfile reads each
    512-byte header and seeks over the data."""
    import tarfile

    from vlmaudit.scan.tario import RecordingTarInfo, member_name

    count, last = 0, None
    with tarfile.open(path, "r:", tarinfo=RecordingTarInfo) as tar:
        for info in tar:
            if info.isfile():
                key = member_key(member_name(info))[0]
                count, last = count + (key != last), key
            tar.members = []  # keep memory flat on shards with many members
    return count


def _arrow_rows(path: str) -> int | None:
    import pyarrow as pa

    with pa.memory_map(path) as source:
        try:
            reader = pa.ipc.open_file(source)
        except pa.ArrowInvalid:
            return None  # the stream format has no footer: counting would read it all
        return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))


class SampleTotal:
    """Counts shards in a daemon thread (started before the model loads); calling it gives the
    total once every shard is counted, None until then, and None for good if one is unknown."""

    def __init__(self, urls: list[str], counter=count_samples):
        import tarfile  # noqa: F401  imported here, not in the thread: no import lock held when workers fork

        import pyarrow.parquet  # noqa: F401

        self._total: int | None = None
        self._thread = threading.Thread(target=self._count, args=(list(urls), counter), daemon=True)
        self._thread.start()

    def _count(self, urls, counter) -> None:
        total = 0
        for url in urls:
            count = counter(url)
            if count is None:
                return
            total += count
        self._total = total

    def wait(self, timeout: float | None = None) -> int | None:
        self._thread.join(timeout)
        return self._total

    def __call__(self) -> int | None:
        return self._total
