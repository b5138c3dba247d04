"""The moto S3 server the object-storage tests use really speaks S3 through s3fs."""


def test_moto_server_round_trips_an_object_through_s3fs(s3):
    import s3fs

    endpoint, bucket = s3
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
    fs.pipe(f"{bucket}/a/b.txt", b"hello")
    assert fs.cat(f"{bucket}/a/b.txt") == b"hello"
    assert fs.ls(f"{bucket}/a") == [f"{bucket}/a/b.txt"]


def test_fsspec_urls_reach_moto_through_aws_endpoint_url_alone(s3):
    import fsspec

    _, bucket = s3
    with fsspec.open(f"s3://{bucket}/x.bin", "wb") as f:
        f.write(b"data")
    with fsspec.open(f"s3://{bucket}/x.bin", "rb") as f:
        assert f.read() == b"data"
