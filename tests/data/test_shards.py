"""Shards: layout, atomic writes, resumption checks, and reading through Ray Data, locally and on
S3 (moto), including every kind of bad data."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import torch

from hoi.config import StorageConfig
from hoi.data.schema import SCHEMA, clip_to_row
from hoi.data.shards import (
    CLIP_COLUMNS,
    POSITION,
    ClipCollate,
    ShardError,
    SkipLog,
    inspect_shard,
    is_complete_shard,
    list_shards,
    read_clips,
    shard_path,
    write_shard,
)
from hoi.storage import (
    exists,
    join,
    list_files,
    makedirs,
    read_bytes,
    read_text,
    resolve,
    write_bytes,
    write_text,
)

pytestmark = pytest.mark.usefixtures("ray_local")

LOCAL = StorageConfig()


@pytest.fixture(params=["local", "s3"])
def location(request, tmp_path) -> tuple[str, StorageConfig]:
    """(empty shard root, storage config) on a local disk or on the moto S3 server."""
    if request.param == "local":
        return str(tmp_path / "shards"), LOCAL
    s3 = request.getfixturevalue("s3")
    return s3.fresh_root(), s3.storage


def write(clips, root, storage, split="train", index=0, encoding="raw") -> str:
    path = shard_path(root, split, index)
    write_shard([clip_to_row(c, encoding) for c in clips], path, storage)
    return path


def rows_by_id(ds) -> dict[str, dict]:
    return {r["clip_id"]: r for r in ds.iter_rows()}


# ---------------------------------------------------------------------------------------------
# Layout and listing
# ---------------------------------------------------------------------------------------------


def test_shard_names_and_listing_ignore_other_files(tmp_path, make_clips):
    root = str(tmp_path)
    assert shard_path("s3://b/p", "val", 42) == "s3://b/p/val/shard-00042.parquet"
    clips = make_clips(2)
    paths = [write(clips, root, LOCAL, "train", 1), write(clips, root, LOCAL, "train", 0),
             write(clips, root, LOCAL, "val", 7)]
    write_bytes(f"{root}/manifest.json", b"{}", LOCAL)
    write_bytes(f"{root}/train/.shard-00002.parquet.tmp-abc", b"PAR1", LOCAL)
    write_bytes(f"{root}/train/notes/shard-00003.parquet", b"PAR1", LOCAL)

    assert list_shards(root, LOCAL) == sorted(paths)
    assert list_shards(root, LOCAL, split="train") == sorted(paths[:2])
    assert "manifest.json" in list_files(root, LOCAL)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_shards(str(tmp_path / "nowhere"), LOCAL)


def test_storage_helpers_read_and_write_small_files(location):
    root, storage = location
    manifest = join(root, "manifest.json")
    makedirs(root, storage)  # creates the local directory; nothing to do on S3
    assert not exists(manifest, storage)
    write_text(manifest, '{"shards": 2}', storage)
    assert exists(manifest, storage) and read_text(manifest, storage) == '{"shards": 2}'
    assert list_files(root, storage) == ["manifest.json"]


def test_storage_rejects_an_endpoint_without_scheme():
    with pytest.raises(ValueError, match="http"):
        resolve("s3://bucket/x", StorageConfig(endpoint_url="127.0.0.1:9000"))


# ---------------------------------------------------------------------------------------------
# Round trips through Ray Data
# ---------------------------------------------------------------------------------------------


def test_raw_round_trip_is_exact(location, make_clips):
    root, storage = location
    train, val = make_clips(3, "train"), make_clips(2, "val", split="val", seed=1)
    info = write_shard([clip_to_row(c) for c in train], shard_path(root, "train", 0), storage)
    write(val, root, storage, "val", 0)
    assert info["rows"] == 3
    assert inspect_shard(info["path"], storage) == info
    assert info["bytes"] == len(read_bytes(info["path"], storage))

    got = rows_by_id(read_clips(root, storage, num_frames=9, height=32, width=48))

    assert sorted(got) == sorted(c.clip_id for c in train + val)
    for clip in train + val:
        row = got[clip.clip_id]
        assert set(row) == {*CLIP_COLUMNS, POSITION}
        for name in ("video", "motion_video", "joints", "points", "K", "R", "T"):
            expected = getattr(clip, name)
            assert row[name].dtype == expected.dtype and np.array_equal(row[name], expected), name
        assert (row["prompt"], row["split"], row["seed"]) == (clip.prompt, clip.split, clip.seed)


def test_split_selects_one_directory(tmp_path, make_clips):
    root = str(tmp_path)
    write(make_clips(2, "train"), root, LOCAL, "train")
    write(make_clips(1, "val"), root, LOCAL, "val")
    assert sorted(rows_by_id(read_clips(root, LOCAL, split="val"))) == ["val-0"]


def test_mp4_round_trip_is_close_and_batches_convert_to_torch(tmp_path, make_clips):
    clips = make_clips(2)
    write(clips, str(tmp_path), LOCAL, encoding="mp4")
    ds = read_clips(str(tmp_path), LOCAL, num_frames=9, height=32, width=48)

    batch = next(iter(ds.iter_torch_batches(batch_size=2, collate_fn=ClipCollate())))

    assert batch["video"].dtype == torch.uint8 and batch["video"].shape == (2, 9, 32, 48, 3)
    assert batch["joints"].shape == (2, 9, 42, 3) and batch["K"].shape == (2, 3, 3)
    by_id = {c.clip_id: c for c in clips}
    for i, clip_id in enumerate(batch["clip_id"]):
        clip = by_id[clip_id]
        for name in ("video", "motion_video"):
            error = np.abs(batch[name][i].numpy().astype(int) - getattr(clip, name)).mean()
            assert error < 2.0, (name, error)  # lossy, but close (archive profile, crf 10)
        assert np.array_equal(batch["joints"][i].numpy(), clip.joints)


# ---------------------------------------------------------------------------------------------
# Atomic writes and resumption
# ---------------------------------------------------------------------------------------------


def _fail_midway(table, sink, **kwargs):
    """Stands in for pq.write_table: some bytes reach the sink, then the write fails."""
    sink.write(b"PAR1" + b"\0" * 1000)
    raise OSError("simulated failure mid-write")


def test_a_failed_write_leaves_the_previous_shard_or_nothing(location, make_clips, monkeypatch):
    root, storage = location
    old = write(make_clips(2), root, storage, index=0)
    monkeypatch.setattr(pq, "write_table", _fail_midway)

    with pytest.raises(OSError, match="mid-write"):
        write(make_clips(3), root, storage, index=0)  # overwriting
    with pytest.raises(OSError, match="mid-write"):
        write(make_clips(3), root, storage, index=1)  # a new shard

    assert list_shards(root, storage) == [old]
    assert inspect_shard(old, storage)["rows"] == 2
    assert not exists(shard_path(root, "train", 1), storage)
    assert list_files(root, storage) == ["train/shard-00000.parquet"]  # no temporary leftovers


def test_local_failure_after_bytes_reach_disk_removes_the_temporary_file(tmp_path, make_clips,
                                                                         monkeypatch):
    def no_fsync(fd):
        raise OSError("simulated disk failure")

    monkeypatch.setattr(os, "fsync", no_fsync)
    with pytest.raises(OSError, match="disk failure"):
        write(make_clips(1), str(tmp_path), LOCAL)
    assert os.listdir(tmp_path / "train") == []


def test_s3_object_is_invisible_until_its_upload_completes(s3):
    fs, inner = resolve(s3.fresh_root() + "/object.bin", s3.storage)
    stream = fs.open_output_stream(inner)
    stream.write(b"x" * 1000)
    assert fs.get_file_info(inner).type == pafs.FileType.NotFound
    stream.close()
    assert fs.get_file_info(inner).size == 1000


def test_resumption_keeps_only_complete_shards(tmp_path, make_clips):
    root = str(tmp_path)
    good = write(make_clips(3), root, LOCAL, index=0)
    data = read_bytes(good, LOCAL)
    truncated = shard_path(root, "train", 1)
    write_bytes(truncated, data[: len(data) // 2], LOCAL)  # e.g. a copy cut short

    assert list_shards(root, LOCAL) == [good, truncated]
    assert is_complete_shard(good, LOCAL) and is_complete_shard(good, LOCAL, expected_rows=3)
    assert not is_complete_shard(good, LOCAL, expected_rows=4)
    assert not is_complete_shard(truncated, LOCAL)
    assert not is_complete_shard(shard_path(root, "train", 2), LOCAL)  # never written


# ---------------------------------------------------------------------------------------------
# Bad data
# ---------------------------------------------------------------------------------------------


def _truncated_shard(clips, root, storage, index) -> str:
    path = write(clips, root, storage, index=index)
    data = read_bytes(path, storage)
    write_bytes(path, data[: len(data) - 100], storage)
    return path


def _shard_without(column, clips, root, storage, index) -> str:
    path = shard_path(root, "train", index)
    table = pa.Table.from_pylist([clip_to_row(c) for c in clips], schema=SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table.drop_columns([column]), sink)
    write_bytes(path, sink.getvalue(), storage)
    return path


def _wrong_shape_row(clip) -> dict:
    row = clip_to_row(clip)
    row["joints"] = clip.joints[:, :41].tobytes()
    row["joints_shape"] = [9, 41, 3]
    return row


def _corrupt_mp4_row(clip) -> dict:
    row = clip_to_row(clip, "mp4")
    row["video"] = row["video"][:200] + b"\xff" * 300
    return row


def test_a_wrong_or_empty_root_fails_before_any_ray_work(tmp_path, s3, monkeypatch):
    def no_ray(*args, **kwargs):
        raise AssertionError("Ray Data was called")

    monkeypatch.setattr("ray.data.from_items", no_ray)
    with pytest.raises(FileNotFoundError, match="missing"):
        read_clips(str(tmp_path / "missing"), LOCAL)
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no shard files"):
        read_clips(str(tmp_path / "empty"), LOCAL)
    with pytest.raises(FileNotFoundError, match="root-absent"):
        read_clips(f"s3://{s3.bucket}/root-absent", s3.storage)
    with pytest.raises(ValueError, match="only local paths and s3://"):
        read_clips("gs://bucket/shards", LOCAL)


@pytest.mark.parametrize("make_bad", ["truncated", "missing_column"])
def test_a_bad_file_raises_naming_it_before_any_ray_work(make_bad, location, make_clips,
                                                         monkeypatch):
    root, storage = location
    write(make_clips(1), root, storage, index=0)
    if make_bad == "truncated":
        bad, reason = _truncated_shard(make_clips(1), root, storage, 1), "truncated or corrupt"
    else:
        bad, reason = _shard_without("joints_shape", make_clips(1), root, storage, 1), "joints_shape"
    monkeypatch.setattr("ray.data.from_items", lambda *a, **k: pytest.fail("Ray Data called"))

    with pytest.raises(ShardError) as info:
        read_clips(root, storage)

    assert "1 of 2 shard files" in str(info.value)
    assert bad in str(info.value) and reason in str(info.value)


def test_a_file_listed_once_per_pass_is_checked_once(tmp_path, make_clips, monkeypatch,
                                                     ray_local):
    """A training stage lists its files once per pass (thousands of times at 5B): their
    footers are read once each, a bad one is reported once, and the good ones keep every
    repetition in order."""
    import hoi.data.shards as shards

    good = write(make_clips(1, prefix="good"), str(tmp_path), LOCAL, index=0)
    bad = _truncated_shard(make_clips(1), str(tmp_path), LOCAL, 1)
    inspected = []
    inspect = shards._inspect
    monkeypatch.setattr(shards, "_inspect",
                        lambda fs, inner, required: inspected.append(inner)
                        or inspect(fs, inner, required))
    skipped = SkipLog()
    ds = read_clips([good, bad] * 50, LOCAL, on_error="skip", skipped=skipped)
    assert sorted(inspected) == sorted([good, bad])
    (item,) = skipped.items()
    assert bad in item.path
    assert ds.count() == 50  # one clip per listing of the good file
    with pytest.raises(ShardError, match="1 of 2 shard files"):
        read_clips([good, bad] * 50, LOCAL)


def test_a_stream_started_at_a_row_reads_on_from_there_and_never_decodes_a_row_before(
        tmp_path, make_clips):
    """A resumed training stage starts its stream at a row: the files before it are left
    out, the file it falls in is read from that row on (its bad first row is never decoded:
    a row group per row), and each row carries its place in the whole listed stream."""
    first = write(make_clips(3, prefix="a"), str(tmp_path), LOCAL, index=0)
    bad, *good = make_clips(3, prefix="b")
    second = shard_path(str(tmp_path), "train", 1)
    write_shard([_wrong_shape_row(bad), *map(clip_to_row, good)], second, LOCAL)
    assert pq.ParquetFile(second).metadata.num_row_groups == 3
    listed = [first, second, first]
    rows = list(read_clips(listed, LOCAL, start=4).iter_rows())
    assert [(r["clip_id"], r[POSITION]) for r in rows] == [
        ("b-1", 4), ("b-2", 5), ("a-0", 6), ("a-1", 7), ("a-2", 8)]
    with pytest.raises(Exception, match="row 0"):  # from the start, the bad row is read
        list(read_clips(listed, LOCAL).iter_rows())
    with pytest.raises(ShardError, match="none from row 9 on"):
        read_clips(listed, LOCAL, start=9)


@pytest.mark.parametrize("make_row, reason", [(_wrong_shape_row, "joints: expected (9, 42, 3)"),
                                              (_corrupt_mp4_row, "MP4 bytes do not decode")])
def test_a_bad_row_raises_naming_file_row_and_clip(make_row, reason, tmp_path, make_clips):
    good0, bad, good2 = make_clips(3)
    path = shard_path(str(tmp_path), "train", 0)
    write_shard([clip_to_row(good0), make_row(bad), clip_to_row(good2)], path, LOCAL)

    with pytest.raises(Exception) as info:  # Ray wraps the ShardError raised in its task
        list(read_clips(str(tmp_path), LOCAL).iter_rows())

    message = str(info.value)
    assert "ShardError" in message and reason in message
    assert f"{path} row 1 (clip_id '{bad.clip_id}')" in message


def test_skip_passes_good_rows_and_records_every_bad_file_and_row(location, make_clips):
    root, storage = location
    good = make_clips(4, "good")
    bad = make_clips(2, "bad", seed=1)
    write(good[:2], root, storage, index=0)
    truncated = _truncated_shard(make_clips(1, "lost"), root, storage, 1)
    no_column = _shard_without("video_shape", make_clips(1, "lost", seed=2), root, storage, 2)
    mixed = shard_path(root, "train", 3)
    write_shard([clip_to_row(good[2]), _wrong_shape_row(bad[0]), _corrupt_mp4_row(bad[1]),
                 clip_to_row(good[3], "mp4")], mixed, storage)
    log = SkipLog()

    got = rows_by_id(read_clips(root, storage, on_error="skip", skipped=log))

    assert sorted(got) == sorted(c.clip_id for c in good)
    items = sorted(log.items(), key=lambda s: (s.path, s.row if s.row is not None else -1))
    assert log.count == 4
    assert [(s.path, s.row, s.clip_id) for s in items] == [
        (truncated, None, None), (no_column, None, None),
        (mixed, 1, bad[0].clip_id), (mixed, 2, bad[1].clip_id)]
    assert "truncated or corrupt" in items[0].reason and "video_shape" in items[1].reason
    assert "joints" in items[2].reason and "MP4" in items[3].reason


def test_skip_with_no_usable_file_still_raises(tmp_path, make_clips):
    _truncated_shard(make_clips(1), str(tmp_path), LOCAL, 0)
    with pytest.raises(ShardError, match="none of the 1 shard files"):
        read_clips(str(tmp_path), LOCAL, on_error="skip")
