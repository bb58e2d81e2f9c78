"""The gRPC contract's Python code, generated from proto/msaas/v1/separation.proto by `make proto`; do not edit."""
