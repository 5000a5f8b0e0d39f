"""S3 clients in the bucket's region: pyarrow's S3 client does not follow a bucket to its
region, so one opened in another region fails on every request. Unless the config names a
region, the bucket's own is asked once (tested against moto with a bucket in us-west-2, as
ray_cluster.yaml's cluster runs)."""

from __future__ import annotations

import boto3
import pytest

from hoi.config import StorageConfig, load_config
from hoi.storage import bucket_region, read_text, resolve, write_text
from hoi.train.job import run_config


@pytest.fixture(scope="module")
def west(s3) -> str:
    """A bucket in us-west-2 on the session's moto server."""
    boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-west-2").create_bucket(
        Bucket="svimo-west", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    return "svimo-west"


def test_clients_take_the_buckets_region_unless_the_config_names_one(s3, west):
    storage = StorageConfig(endpoint_url=s3.endpoint_url)
    assert storage.region is None  # the default: ask the bucket
    assert bucket_region(west, s3.endpoint_url) == "us-west-2"
    assert bucket_region(s3.bucket, s3.endpoint_url) == "us-east-1"
    fs, inner = resolve(f"s3://{west}/runs/x.txt", storage)
    assert fs.region == "us-west-2" and inner == f"{west}/runs/x.txt"
    write_text(f"s3://{west}/runs/x.txt", "hello", storage)
    assert read_text(f"s3://{west}/runs/x.txt", storage) == "hello"
    named = StorageConfig(endpoint_url=s3.endpoint_url, region="eu-central-1")
    assert resolve(f"s3://{west}/runs", named)[0].region == "eu-central-1"


def test_ray_train_storage_uses_the_same_client(s3, west):
    cfg = load_config(overrides=["--storage.endpoint_url", s3.endpoint_url,
                                 "--train.storage_path", f"s3://{west}/runs"])
    run = run_config(cfg)
    assert run.storage_filesystem.region == "us-west-2" and run.storage_path == f"{west}/runs"


def test_without_an_answer_the_aws_configuration_decides(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    (tmp_path / "config").write_text("[default]\nregion = ap-southeast-2\n")
    closed = "http://127.0.0.1:9"  # nothing listens: no answer
    bucket_region.cache_clear()
    assert bucket_region("b", closed) == "ap-southeast-2"
    monkeypatch.setenv("AWS_REGION", "sa-east-1")
    bucket_region.cache_clear()
    assert bucket_region("b", closed) == "sa-east-1"
    bucket_region.cache_clear()
