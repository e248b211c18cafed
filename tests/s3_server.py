"""A real S3 API server for the tests and the benchmark: moto in server mode on 127.0.0.1.

Moto's credential checks are off by default: any access key and secret are accepted.
:meth:`MotoS3.credentials_checked` switches them on the way moto documents for server mode:
``POST /moto-api/reset-auth`` with the number of requests still allowed without authentication
(``0``: check from now on; ``inf``: never, the default). It is the HTTP form of
``moto.core.set_initial_no_auth_action_count``; the ``INITIAL_NO_AUTH_ACTION_COUNT`` environment
variable would work only if set before moto is first imported, and then for the whole session.
With checks on, moto verifies each request's SigV4 signature against the secret of an IAM access
key it issued and the key's IAM policy. Moto 5.2.5 cannot check presigned (query-string)
signatures: with checks on, a presigned GET answers HTTP 500, so links are fetched with checks off.

The server runs in this process (``ThreadedMotoServer``), so its buckets and the auth switch are
process-wide: every test uses its own bucket, and the switch is always put back.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import boto3
import requests
from botocore.config import Config
from moto.server import ThreadedMotoServer

from tests.harness import free_port
from worker.delivery.s3 import S3Settings

#: Any key works while moto's credential checks are off.
OPEN_KEY, OPEN_SECRET = "AKIAOPENTESTKEY00001", "open/test/secret/key/0000000000000000000"


class MotoS3:
    """A moto S3 (and IAM) server on 127.0.0.1 in this process, plus what the tests need of it."""

    def __init__(self) -> None:
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)

    def start(self) -> MotoS3:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # its access log prints every presigned URL
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def client(self, service: str = "s3", key: str = OPEN_KEY, secret: str = OPEN_SECRET):
        return boto3.session.Session().client(
            service, endpoint_url=self.endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
            region_name="us-east-1", config=Config(s3={"addressing_style": "path"}),
        )  # fmt: skip

    def new_bucket(self) -> str:
        name = f"videos-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def settings(self, bucket: str, **changes: object) -> S3Settings:
        base = S3Settings(endpoint_url=self.endpoint, access_key_id=OPEN_KEY, secret_access_key=OPEN_SECRET, bucket=bucket)
        return replace(base, **changes)

    def env(self, bucket: str, key: str = OPEN_KEY, secret: str = OPEN_SECRET) -> dict[str, str]:
        """The worker's environment variables for this server and bucket."""
        return {"BUCKET_ENDPOINT_URL": self.endpoint, "BUCKET_NAME": bucket, "BUCKET_ACCESS_KEY_ID": key,
                "BUCKET_SECRET_ACCESS_KEY": secret}  # fmt: skip

    @contextmanager
    def credentials_checked(self) -> Iterator[tuple[str, str]]:
        """Switch moto's signature and IAM checks on; yields an access key allowed ``s3:*``."""
        iam = self.client("iam")
        user = f"worker-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=user)
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName=user, PolicyName="s3-all", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        self._set_unauthenticated_requests("0")
        try:
            yield key["AccessKeyId"], key["SecretAccessKey"]
        finally:
            self._set_unauthenticated_requests("inf")

    def _set_unauthenticated_requests(self, count: str) -> None:
        requests.post(f"{self.endpoint}/moto-api/reset-auth", data=count.encode(), timeout=5).raise_for_status()
