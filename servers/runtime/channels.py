"""Settings of the gRPC links inside the mesh, in one place: what a server accepts and sends, and how
a server that calls another one (the agent its services, a replica its peer) reconnects."""

from __future__ import annotations

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # an init image or a video inline
MESSAGE_SIZE_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
# gRPC's default backoff grows to 120 s: a service restarted by the supervisor would look down for
# minutes. Retry every 0.5-2 s instead.
RECONNECT_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 500), ("grpc.max_reconnect_backoff_ms", 2000)]
