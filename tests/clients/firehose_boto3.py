"""boto3's Firehose client and KPL-aggregated records (built by AWS's
aws-kinesis-agg package) against sluice.

Usage: python3 firehose_boto3.py http://127.0.0.1:PORT
Streams `fh` (declared in SQL: user_id BIGINT, url TEXT) and `raw` (made
here through the Kinesis API) must not exist yet except `fh`.
Asserts as it goes; prints one JSON line of findings at the end.
"""
import base64
import json
import sys

import boto3
from aws_kinesis_agg.aggregator import RecordAggregator
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint = sys.argv[1]
common = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x",
              aws_secret_access_key="x", config=Config(retries={"max_attempts": 1}))
fh = boto3.client("firehose", **common)
k = boto3.client("kinesis", **common)
out = {}

# Delivery streams are sluice streams.
names = fh.list_delivery_streams(Limit=100)["DeliveryStreamNames"]
assert "fh" in names, names
desc = fh.describe_delivery_stream(DeliveryStreamName="fh")["DeliveryStreamDescription"]
assert desc["DeliveryStreamStatus"] == "ACTIVE", desc
out["destinations"] = [d["DestinationId"] for d in desc["Destinations"]]

# PutRecord and PutRecordBatch, newline-terminated JSON as Firehose producers send.
one = fh.put_record(DeliveryStreamName="fh", Record={"Data": b'{"user_id": 1, "url": "/a"}\n'})
assert one["RecordId"], one
batch = fh.put_record_batch(
    DeliveryStreamName="fh",
    Records=[{"Data": json.dumps({"user_id": i, "url": f"/b{i}"}).encode() + b"\n"} for i in range(2, 502)],
)
assert batch["FailedPutCount"] == 0, batch
assert len(batch["RequestResponses"]) == 500
assert len({r["RecordId"] for r in batch["RequestResponses"]}) == 500

# A bad record fails alone, with its own error; the others are stored.
mixed = fh.put_record_batch(
    DeliveryStreamName="fh",
    Records=[{"Data": b'{"user_id": 600, "url": "/ok"}'}, {"Data": b"not json"},
             {"Data": b'{"user_id": 601, "url": "/ok"}'}],
)
assert mixed["FailedPutCount"] == 1, mixed
assert "ErrorCode" in mixed["RequestResponses"][1] and "RecordId" in mixed["RequestResponses"][2], mixed

# Limits and unknown streams answer as Firehose does.
try:
    fh.put_record_batch(DeliveryStreamName="fh", Records=[{"Data": b"{}"}] * 501)
    raise AssertionError("501 records accepted")
except ClientError as e:
    out["too_many"] = e.response["Error"]["Code"]
try:
    fh.put_record(DeliveryStreamName="nope", Record={"Data": b"{}"})
    raise AssertionError("unknown stream accepted")
except ClientError as e:
    out["unknown"] = e.response["Error"]["Code"]

# KPL aggregation: 300 user records in aggregated records, through
# Firehose (into fh) and through Kinesis PutRecords (into raw).
def aggregated(users):
    agg, records = RecordAggregator(), []
    for key, data in users:
        done = agg.add_user_record(key, data)
        if done is not None:
            records.append(done.get_contents())
    last = agg.clear_and_get()
    if last is not None and last.get_num_user_records() > 0:
        records.append(last.get_contents())
    return records

fh_users = [(f"k{i}", json.dumps({"user_id": 1000 + i, "url": "/kpl"}).encode()) for i in range(300)]
fh_aggs = aggregated(fh_users)
res = fh.put_record_batch(DeliveryStreamName="fh", Records=[{"Data": d} for _, _, d in fh_aggs])
assert res["FailedPutCount"] == 0, res
out["fh_aggregated_puts"] = len(fh_aggs)

k.create_stream(StreamName="raw", ShardCount=2)
raw_users = [(f"user-{i % 10}", f"payload-{i}".encode()) for i in range(300)]
raw_aggs = aggregated(raw_users)
res = k.put_records(StreamName="raw", Records=[{"Data": d, "PartitionKey": pk} for pk, _, d in raw_aggs])
assert res["FailedRecordCount"] == 0, res
# A record that only looks aggregated (bad digest) is ordinary data.
fake = b"\xf3\x89\x9a\xc2" + b"not a protobuf" + b"\x00" * 16
k.put_record(StreamName="raw", Data=fake, PartitionKey="fake")

seen = []
for shard in [s["ShardId"] for s in k.list_shards(StreamName="raw")["Shards"]]:
    it = k.get_shard_iterator(StreamName="raw", ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    got = k.get_records(ShardIterator=it, Limit=10000)
    seen.extend((shard, r["PartitionKey"], r["Data"]) for r in got["Records"])
assert sorted(d for _, _, d in seen) == sorted([d for _, d in raw_users] + [fake]), len(seen)
# Each user record keeps its own key and is routed by it: one shard per key,
# and the ten keys spread over both shards.
shards_of = {}
for shard, key, data in seen:
    shards_of.setdefault(key, set()).add(shard)
assert all(len(v) == 1 for v in shards_of.values()), shards_of
assert len({next(iter(v)) for k, v in shards_of.items() if k != "fake"}) == 2, shards_of
assert {k for _, k, _ in seen} == {f"user-{i}" for i in range(10)} | {"fake"}
out["raw_read"] = len(seen)
out["raw_aggregated_puts"] = len(raw_aggs)
print(json.dumps(out))
