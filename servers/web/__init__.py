"""The HTTP front door: routes the gRPC-JSON transcoder cannot express (OpenAI's API), served by one
process behind the gateway that calls the services over gRPC like any client and keeps no state."""
