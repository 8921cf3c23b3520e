"""Generated protobuf and gRPC code for the musicrec.v1 API (do not edit; run `make proto`)."""
