"""The README recipes, run as written: keep list in a webdataset pipeline, DuckDB, polars, HF datasets."""

import pytest

from conftest import run_cli


@pytest.fixture(scope="module")
def filtered(demo_scan, tmp_path_factory):
    """(the demo scan's shards, its reports, a folder holding `filter`'s lists of them)."""
    out = tmp_path_factory.mktemp("recipes")
    assert run_cli("filter", demo_scan.reports, "--policy", "permissive", "--out", out / "filtered").exit_code == 0
    return demo_scan.shards, demo_scan.reports, out


def test_keep_list_in_a_webdataset_pipeline(filtered):
    import pyarrow.parquet as pq
    import webdataset as wds

    shards, _, out = filtered
    # --- recipe: keep list in webdataset ---
    keep = set(pq.read_table(out / "filtered" / "keep.parquet", columns=["key"]).column("key").to_pylist())
    dataset = wds.WebDataset([str(s) for s in shards], shardshuffle=False).select(lambda s: s["__key__"] in keep)
    # ---
    assert sorted(s["__key__"] for s in dataset) == sorted(keep)


def test_duckdb_query(filtered):
    duckdb = pytest.importorskip("duckdb")
    _, reports, out = filtered
    # --- recipe: DuckDB ---
    rows = duckdb.sql(f"""
        SELECT image_top_concept, count(*) AS n, avg(image_top_score) AS mean_score
        FROM read_parquet('{reports}/*.parquet')
        WHERE image_flagged GROUP BY 1 ORDER BY n DESC
    """).fetchall()
    # ---
    total = duckdb.sql(f"SELECT count(*) FROM read_parquet('{reports}/*.parquet') WHERE image_flagged").fetchall()[0]
    assert sum(n for _, n, _ in rows) == total[0]


def test_polars_query(filtered):
    pl = pytest.importorskip("polars")
    _, reports, out = filtered
    # --- recipe: polars ---
    per_shard = (pl.scan_parquet(f"{reports}/*.parquet")
                 .group_by("shard").agg(pl.col("flagged").mean().alias("flagged_rate"), pl.len().alias("n"))
                 .sort("shard").collect())
    # ---
    assert per_shard["n"].to_list() == [20, 20, 23]


def test_hf_datasets_load(filtered):
    datasets = pytest.importorskip("datasets")
    _, reports, out = filtered
    # --- recipe: HF datasets ---
    rows = datasets.load_dataset("parquet", data_files=f"{reports}/*.parquet", split="train",
                                 cache_dir=f"{out}/hf-cache")
    keep = datasets.load_dataset("parquet", data_files=f"{out}/filtered/keep.parquet", split="train",
                                 cache_dir=f"{out}/hf-cache")
    # ---
    assert len(rows) == 63 and len(rows[0]["image_scores"]) == 75
    assert set(keep.column_names) >= {"shard", "key", "reasons"} and len(keep) > 0
