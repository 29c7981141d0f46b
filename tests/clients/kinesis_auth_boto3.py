"""boto3 against a sluice with [auth]: SigV4-signed Kinesis calls with
keys of three roles, a wrong secret and an unknown key id.

Usage: python3 kinesis_auth_boto3.py ENDPOINT CA_FILE_OR_- ADMIN_ID ADMIN_SECRET
           WRITER_ID WRITER_SECRET READER_ID READER_SECRET
Prints one JSON line: the error code of each refused call, and what the
allowed calls returned.
"""
import json
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, ca = sys.argv[1], sys.argv[2]
keys = dict(zip(["admin", "writer", "reader"], zip(sys.argv[3::2], sys.argv[4::2])))
calls = []


def client(key_id, secret):
    return boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name="eu-west-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        verify=ca if ca != "-" else None,
        config=Config(retries={"max_attempts": 1}),
    )


def attempt(name, call):
    try:
        result = call()
        return {"ok": True, "result": result}
    except ClientError as e:
        return {
            "ok": False,
            "code": e.response["Error"]["Code"],
            "status": e.response["ResponseMetadata"]["HTTPStatusCode"],
            "message": e.response["Error"].get("Message", ""),
        }


admin, writer, reader = (client(*keys[r]) for r in ["admin", "writer", "reader"])
stream = "signed_" + ("tls" if endpoint.startswith("https") else "plain")
out = {}
out["reader_create"] = attempt("create", lambda: reader.create_stream(StreamName=stream, ShardCount=1))
out["admin_create"] = attempt("create", lambda: admin.create_stream(StreamName=stream, ShardCount=1) and None)
out["writer_put"] = attempt(
    "put", lambda: writer.put_record(StreamName=stream, Data=b"signed", PartitionKey="k")["SequenceNumber"]
)
out["reader_put"] = attempt("put", lambda: reader.put_record(StreamName=stream, Data=b"no", PartitionKey="k"))
out["reader_list"] = attempt("list", lambda: reader.list_streams()["StreamNames"])
out["wrong_secret"] = attempt(
    "put",
    lambda: client(keys["writer"][0], "not-the-secret").put_record(StreamName=stream, Data=b"x", PartitionKey="k"),
)
out["unknown_key"] = attempt(
    "list", lambda: client("AKIDNOSUCHKEY", keys["writer"][1]).list_streams()
)
out["writer_delete"] = attempt("delete", lambda: writer.delete_stream(StreamName=stream))
print(json.dumps(out))
