"""Completion webhooks: when a job ends, its server POSTs the terminal ``Job`` as JSON to the URL the
request named (``notify_url``) or its key's default, signed, retried with backoff for up to 24 hours
across restarts.

- ``allow``: which URLs the operator allows (``GENMESH_WEBHOOK_ALLOW``) and the address checks that
  keep a server from becoming a proxy into the operator's network.
- ``sign``: the ``Genmesh-Signature`` header (HMAC-SHA256 over ``timestamp.body``) and each key's secret.
- ``gate``: a job request's webhook, checked before the job is queued (one place for every RPC).
- ``deliver``: one POST to a checked address, no redirects, short timeouts; the backoff schedule.
- ``dispatcher``: pending deliveries persisted in the object store, attempted, retried, reported.

Nothing here imports grpc.
"""
