"""A real AWS SDK (boto3) producer and consumer against sluice's Kinesis API.

Usage: python3 kinesis_boto3.py http://127.0.0.1:PORT
Asserts as it goes; prints one JSON line of findings at the end.
"""
import json
import sys
import time

import boto3
from botocore.config import Config

endpoint = sys.argv[1]
k = boto3.client(
    "kinesis",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="x",
    aws_secret_access_key="x",
    config=Config(retries={"max_attempts": 1}),
)

k.create_stream(StreamName="events", ShardCount=2)
assert "events" in k.list_streams()["StreamNames"]
summary = k.describe_stream_summary(StreamName="events")["StreamDescriptionSummary"]
assert summary["StreamStatus"] == "ACTIVE" and summary["OpenShardCount"] == 2, summary
shards = [s["ShardId"] for s in k.list_shards(StreamName="events")["Shards"]]
assert shards == ["shardId-000000000000", "shardId-000000000001"], shards

one = k.put_record(StreamName="events", Data=b"\x00\x01binary", PartitionKey="user-1")
batch = k.put_records(
    StreamName="events",
    Records=[{"Data": f"event-{i}".encode(), "PartitionKey": f"user-{i % 7}"} for i in range(500)],
)
assert batch["FailedRecordCount"] == 0, batch
assert len(batch["Records"]) == 500

# Read everything back from both shards with iterators.
seen = []
for shard in shards:
    it = k.get_shard_iterator(StreamName="events", ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    while True:
        out = k.get_records(ShardIterator=it, Limit=100)
        seen.extend(r["Data"] for r in out["Records"])
        it = out["NextShardIterator"]
        if not out["Records"]:
            break
assert len(seen) == 501, len(seen)
assert b"\x00\x01binary" in seen
assert sorted(d for d in seen if d.startswith(b"event-")) == sorted(f"event-{i}".encode() for i in range(500))

# Per-key order: a key's records come back in the order they were put.
first = batch["Records"][0]
again = k.get_shard_iterator(
    StreamName="events",
    ShardId=first["ShardId"],
    ShardIteratorType="AT_SEQUENCE_NUMBER",
    StartingSequenceNumber=first["SequenceNumber"],
)["ShardIterator"]
assert k.get_records(ShardIterator=again, Limit=1)["Records"][0]["Data"] == b"event-0"
after = k.get_shard_iterator(
    StreamName="events",
    ShardId=first["ShardId"],
    ShardIteratorType="AFTER_SEQUENCE_NUMBER",
    StartingSequenceNumber=first["SequenceNumber"],
)["ShardIterator"]
assert k.get_records(ShardIterator=after, Limit=1)["Records"][0]["Data"] != b"event-0"

latest = k.get_shard_iterator(StreamName="events", ShardId=shards[0], ShardIteratorType="LATEST")["ShardIterator"]
assert k.get_records(ShardIterator=latest)["Records"] == []
# botocore sends AT_TIMESTAMP in whole seconds: leave a clear second between.
time.sleep(1.2)
start = time.time()
k.put_record(StreamName="events", Data=b"late", PartitionKey="user-late")
late_records = []
for shard in shards:
    it = k.get_shard_iterator(StreamName="events", ShardId=shard, ShardIteratorType="AT_TIMESTAMP", Timestamp=start)["ShardIterator"]
    late_records += [r["Data"] for r in k.get_records(ShardIterator=it)["Records"]]
assert late_records == [b"late"], late_records

# A stream declared in SQL: Data is a JSON object per record; a bad one fails alone.
sql = k.put_records(
    StreamName="clicks",
    Records=[
        {"Data": json.dumps({"event_time": "2026-11-25T13:00:00", "user_id": 1, "url": "/a"}).encode(), "PartitionKey": "1"},
        {"Data": b"not json", "PartitionKey": "2"},
        {"Data": json.dumps({"event_time": "2026-11-25T13:00:01", "user_id": 3, "url": "/c"}).encode(), "PartitionKey": "3"},
    ],
)
assert sql["FailedRecordCount"] == 1, sql
assert sql["Records"][1]["ErrorCode"] == "InvalidArgumentException", sql
read_back = []
for shard in [s["ShardId"] for s in k.list_shards(StreamName="clicks")["Shards"]]:
    it = k.get_shard_iterator(StreamName="clicks", ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    read_back += [json.loads(r["Data"]) for r in k.get_records(ShardIterator=it)["Records"]]
assert sorted(r["url"] for r in read_back) == ["/a", "/c"], read_back

# Errors look like AWS errors.
try:
    k.put_record(StreamName="missing", Data=b"x", PartitionKey="k")
    raise AssertionError("put into a missing stream succeeded")
except k.exceptions.ResourceNotFoundException:
    pass
try:
    k.create_stream(StreamName="events", ShardCount=1)
    raise AssertionError("duplicate create succeeded")
except k.exceptions.ResourceInUseException:
    pass

k.delete_stream(StreamName="events")
assert "events" not in k.list_streams()["StreamNames"]
print(json.dumps({"read": len(seen), "sql_failed": sql["FailedRecordCount"]}))
