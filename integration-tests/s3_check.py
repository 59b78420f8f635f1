"""The embedded-default run against an S3-compatible server: moto's server, in this process, on
loopback. eavlake writes the lake through object_store's S3 client (path-style, plain HTTP);
this script then downloads current/ and checks it value for value with duckdb_check. The events
come in two runs, the file growing in between as a log does: the second run's compaction
folds into current objects that are on S3 already (their footers read by suffix ranges).

    python3 integration-tests/s3_check.py <eavlake binary> <events.jsonl> <truth.jsonl> <config.toml>

The config's [lake] and [lake.s3] sections are replaced by the server's. Exits 1 on any
difference; the server stops with the script.
"""
import logging
import os
import json
import subprocess
import sys
import tempfile

import boto3
from moto.server import ThreadedMotoServer

sys.path.insert(0, os.path.dirname(__file__))
import duckdb_check  # noqa: E402


def main():
    binary, events, truth, base_config = sys.argv[1:5]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="eavlake", aws_secret_access_key="eavlake-secret")
        s3.create_bucket(Bucket="lake")
        with open(base_config) as f:
            decode = [line for line in f if not line.startswith(("url", "range_size", "decimal_scale", "[lake"))]
        with tempfile.TemporaryDirectory() as tmp:
            config = os.path.join(tmp, "s3.toml")
            with open(config, "w") as f:
                f.write('[lake]\nurl = "s3://lake/eav"\n\n[lake.s3]\n'
                        f'endpoint = "{endpoint}"\nregion = "us-east-1"\nallow_http = true\n'
                        'access_key_id = "eavlake"\nsecret_access_key = "eavlake-secret"\n\n')
                f.writelines(decode)
            with open(events, "rb") as f:
                lines = f.readlines()
            growing = os.path.join(tmp, "events.jsonl")
            for upto in (len(lines) // 2, len(lines)):
                with open(growing, "wb") as f:
                    f.writelines(lines[:upto])
                run = subprocess.run([binary, "run", "--source", f"file:{growing}", "--config", config],
                                     capture_output=True, text=True)
                if run.returncode != 0:
                    print(run.stderr)
                    return 1
                if "eavlake-secret" in run.stderr + run.stdout:
                    print("the secret access key appears in eavlake's output")
                    return 1
                compaction = json.loads(run.stdout)["compaction"]
                print(f"run of {upto} lines: {compaction['ranges_written']} ranges compacted")
            # A third run takes the stream over with a conditional write (If-Match on the
            # progress record) and finds everything durable.
            again = subprocess.run([binary, "run", "--source", f"file:{growing}", "--config", config],
                                   capture_output=True, text=True)
            if again.returncode != 0 or json.loads(again.stdout)["stats"]["records"] != 0:
                print("third run over S3:", again.stderr, again.stdout)
                return 1
            progress = [o["Key"] for o in s3.list_objects_v2(Bucket="lake", Prefix="eav/_eavlake/progress/")["Contents"]]
            record = json.loads(s3.get_object(Bucket="lake", Key=progress[0])["Body"].read())
            if record["owner"]["epoch"] != 3:
                print("progress record after three runs:", record)
                return 1
            lake = os.path.join(tmp, "lake")
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket="lake", Prefix="eav/current/")
            count = 0
            for page in pages:
                for obj in page.get("Contents", []):
                    local = os.path.join(lake, obj["Key"][len("eav/"):])
                    os.makedirs(os.path.dirname(local), exist_ok=True)
                    s3.download_file("lake", obj["Key"], local)
                    count += 1
            print(f"S3 lake at {endpoint}: {count} current-state objects")
            sys.argv = ["duckdb_check", lake, truth]
            return duckdb_check.main()
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
