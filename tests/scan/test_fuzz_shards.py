"""Property: truncating a shard or flipping its bytes never crashes the reader/decoder, and every
sample whose members lie wholly before the first damaged byte is still reported, in order."""

import io
import random
import tarfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import NoInputs
from vlmaudit.demo.build import synthetic_image
from vlmaudit.scan.worker import ScanSettings, ShardJob, prepare_shard

N = 8


def build_shard():
    rng, buffer, spans = random.Random(0), io.BytesIO(), []
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        for i in range(N):
            start = buffer.tell()
            for ext, data in (("jpg", synthetic_image(rng, (32, 24))), ("txt", f"caption {i}".encode())):
                info = tarfile.TarInfo(f"{i:03d}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            spans.append((start, buffer.tell()))
    return buffer.getvalue(), spans


SHARD, SPANS = build_shard()


def read(tmp_path, data):
    path = tmp_path / "fuzz.tar"
    path.write_bytes(data)
    batches = list(prepare_shard(ShardJob(str(path), "fuzz"), NoInputs(), ScanSettings(batch_size=3, retries=0)))
    return [m for b in batches for m in b.metas], batches[-1].end


def intact_keys(first_damage: int) -> list[str]:
    return [f"{i:03d}" for i, (_, end) in enumerate(SPANS) if end <= first_damage]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, len(SHARD)))
def test_truncation_never_crashes_and_keeps_intact_samples(tmp_path, cut):
    metas, end = read(tmp_path, SHARD[:cut])
    keys = [m.key for m in metas]
    expected = intact_keys(cut)
    assert keys[: len(expected)] == expected
    assert end.status in ("complete", "truncated", "failed")
    if cut < SPANS[-1][1]:  # inside a member: must not look complete
        assert end.status != "complete"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, len(SHARD) - 1), st.integers(1, 255)), min_size=1, max_size=8))
def test_byte_flips_never_crash_and_keep_samples_before_the_damage(tmp_path, flips):
    data = bytearray(SHARD)
    for offset, xor in flips:
        data[offset] ^= xor
    metas, end = read(tmp_path, bytes(data))
    first = min(offset for offset, _ in flips)
    expected = intact_keys(first)
    assert [m.key for m in metas][: len(expected)] == expected
    assert all(m.status in ("ok", "decode_error", "missing_image", "duplicate_key", "too_large") for m in metas)
