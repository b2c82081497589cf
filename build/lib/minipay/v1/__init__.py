"""Generated from protofiles/minipay/v1/*.proto by ``make protos``; not committed."""
