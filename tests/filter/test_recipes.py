"""The README recipes, run as written: keep list in a webdataset pipeline, DuckDB, polars, HF datasets."""

import pytest

from conftest import run_cli, scanned_demo


@pytest.fixture(scope="module")
def filtered(tmp_path_factory, tiny_clip):
    root = tmp_path_factory.mktemp("recipes")
    shards, _ = scanned_demo(root, tiny_clip, shards=2, per_shard=10)
    assert run_cli("filter", root / "reports", "--policy", "permissive", "--out", root / "filtered").exit_code == 0
    return root, shards


def test_keep_list_in_a_webdataset_pipeline(filtered):
    import pyarrow.parquet as pq
    import webdataset as wds

    root, shards = filtered
    # --- recipe: keep list in webdataset ---
    keep = set(pq.read_table(root / "filtered" / "keep.parquet", columns=["key"]).column("key").to_pylist())
    dataset = wds.WebDataset([str(s) for s in shards], shardshuffle=False).select(lambda s: s["__key__"] in keep)
    # ---
    assert sorted(s["__key__"] for s in dataset) == sorted(keep)


def test_duckdb_query(filtered):
    duckdb = pytest.importorskip("duckdb")
    root, _ = filtered
    # --- recipe: DuckDB ---
    rows = duckdb.sql(f"""
        SELECT image_top_concept, count(*) AS n, avg(image_top_score) AS mean_score
        FROM read_parquet('{root}/reports/*.parquet')
        WHERE image_flagged GROUP BY 1 ORDER BY n DESC
    """).fetchall()
    # ---
    total = duckdb.sql(f"SELECT count(*) FROM read_parquet('{root}/reports/*.parquet') WHERE image_flagged").fetchall()[0]
    assert sum(n for _, n, _ in rows) == total[0]


def test_polars_query(filtered):
    pl = pytest.importorskip("polars")
    root, _ = filtered
    # --- recipe: polars ---
    per_shard = (pl.scan_parquet(f"{root}/reports/*.parquet")
                 .group_by("shard").agg(pl.col("flagged").mean().alias("flagged_rate"), pl.len().alias("n"))
                 .sort("shard").collect())
    # ---
    assert per_shard["n"].to_list() == [10, 10]


def test_hf_datasets_load(filtered):
    datasets = pytest.importorskip("datasets")
    root, _ = filtered
    # --- recipe: HF datasets ---
    reports = datasets.load_dataset("parquet", data_files=f"{root}/reports/*.parquet", split="train",
                                    cache_dir=f"{root}/hf-cache")
    keep = datasets.load_dataset("parquet", data_files=f"{root}/filtered/keep.parquet", split="train",
                                 cache_dir=f"{root}/hf-cache")
    # ---
    assert len(reports) == 20 and len(reports[0]["image_scores"]) == 75
    assert set(keep.column_names) >= {"shard", "key", "reasons"} and len(keep) > 0
